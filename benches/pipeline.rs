//! Criterion benchmarks of the hot path: decode (protobuf, JSON), routing, the shard's
//! per-event cost (heartbeats, alarms) and the embedded log's append path.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use firewatch::config::PipelineConfig;
use firewatch::eventlog::EventLog;
use firewatch::ingest::decode;
use firewatch::pipeline::aggregate::Coverage;
use firewatch::pipeline::timers::TimerWheel;
use firewatch::pipeline::{BatchCtx, RoutedEvent, Router, Shard, ShardRules};
use firewatch::registry::{generate, GenerateOptions};
use firewatch::sink::BatchAck;
use firewatch_proto::{EventKind, PointEvent, UplinkBatch};
use prost::Message;
use std::sync::Arc;
use std::time::Instant;

const T0: i64 = 1_800_000_000_000;

fn sample_batch(n: usize) -> UplinkBatch {
    UplinkBatch {
        gateway_id: "gw-000001".into(),
        batch_seq: 1,
        sent_at_ms: T0,
        events: (0..n)
            .map(|i| PointEvent {
                point_id: i as u64 + 1,
                kind: if i % 10 == 0 {
                    EventKind::SmokeAlarm
                } else {
                    EventKind::Heartbeat
                } as i32,
                device_seq: i as u32,
                device_time_ms: T0,
                value: 0.1,
                battery_pct: 80,
                rssi_dbm: -70,
            })
            .collect(),
    }
}

fn bench_decode(c: &mut Criterion) {
    let b = sample_batch(50);
    let pb = b.encode_to_vec();
    let js = decode::encode_json(&b).into_bytes();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(50));
    g.bench_function("protobuf_batch_of_50", |x| {
        x.iter(|| decode::decode_protobuf(black_box(&pb)))
    });
    g.bench_function("json_batch_of_50", |x| {
        x.iter(|| decode::decode_json(black_box(&js)))
    });
    g.finish();
}

fn bench_shard(c: &mut Criterion) {
    let reg = Arc::new(generate(&GenerateOptions {
        points: 100_000,
        seed: 1,
    }));
    let n = reg.len() as u32;
    let ctx = BatchCtx {
        gateway_id: "gw".into(),
        batch_seq: 1,
        received_ms: T0,
    };
    let mut g = c.benchmark_group("shard");
    g.throughput(Throughput::Elements(1));
    for (name, kind) in [
        ("heartbeat", EventKind::Heartbeat),
        ("smoke_alarm", EventKind::SmokeAlarm),
    ] {
        let rules = Arc::new(ShardRules::new(&PipelineConfig::default(), &reg).unwrap());
        let cov = Arc::new(Coverage::new(&reg));
        let mut shard = Shard::new(reg.clone(), rules, (0..n).collect(), cov, false, T0);
        let mut out = Vec::with_capacity(1024);
        let mut i = 0u32;
        g.bench_function(format!("on_event_{name}"), |x| {
            x.iter(|| {
                i = i.wrapping_add(1);
                let p = i % n;
                let ev = RoutedEvent {
                    point: p,
                    local: p,
                    event: PointEvent {
                        kind: kind as i32,
                        device_seq: i,
                        ..Default::default()
                    },
                };
                let r = shard.on_event(&ev, &ctx, T0 + i64::from(i), &mut out);
                if out.len() > 512 {
                    out.clear();
                }
                r
            })
        });
    }
    g.finish();
}

fn bench_route(c: &mut Criterion) {
    let reg = generate(&GenerateOptions {
        points: 100_000,
        seed: 1,
    });
    let (mut router, inputs) = Router::new(&reg, 2, 1 << 16);
    let ctx = BatchCtx {
        gateway_id: "gw".into(),
        batch_seq: 1,
        received_ms: T0,
    };
    let events: Vec<(u32, PointEvent)> = (0..50u32)
        .map(|i| {
            (
                i * 997 % reg.len() as u32,
                PointEvent {
                    kind: EventKind::Heartbeat as i32,
                    ..Default::default()
                },
            )
        })
        .collect();
    let mut g = c.benchmark_group("router");
    g.throughput(Throughput::Elements(50));
    g.bench_function("route_batch_of_50", |x| {
        x.iter(|| {
            router.route(events.iter().copied(), &ctx, |p| {
                BatchAck::new("gw".into(), 1, vec![], vec![], Instant::now(), p)
            });
            for i in &inputs {
                while i.normal.try_recv().is_ok() {}
                while i.alarm.try_recv().is_ok() {}
            }
        })
    });
    g.finish();
}

fn bench_log(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = EventLog::open(dir.path(), 64 << 20).unwrap();
    let value = vec![7u8; 120];
    let mut g = c.benchmark_group("eventlog");
    g.throughput(Throughput::Elements(1));
    g.bench_function("append_120b", |x| {
        x.iter(|| {
            log.append("fw.alarms", T0, b"12345", black_box(&value))
                .unwrap()
        })
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("append_1000_then_fsync", |x| {
        x.iter_batched(
            || (),
            |_| {
                for _ in 0..1000 {
                    log.append("fw.point-status", T0, b"12345", &value).unwrap();
                }
                log.flush(true).unwrap();
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// The supervision wheel at city scale: 800,000 points of a 24 h (+1 h) class, spread
/// over the window. Re-arming is one push; advancing a second costs what expires then
/// (about 800,000 / 90,000 ≈ 9 entries), independent of the 800,000 held.
fn bench_timers(c: &mut Criterion) {
    let points = 800_000u32;
    let window = 25 * 3600u32;
    let city = || {
        let mut wheel = TimerWheel::new(0);
        for p in 0..points {
            wheel.insert(
                p,
                1 + (u64::from(p) * u64::from(window) / u64::from(points)) as u32,
            );
        }
        wheel
    };
    let mut g = c.benchmark_group("timers");
    g.throughput(Throughput::Elements(1));
    let mut wheel = city();
    let mut p = 0u32;
    g.bench_function("rearm_800k_24h_class", |x| {
        x.iter(|| {
            p = (p + 7919) % points;
            wheel.insert(p, 1 + p % window);
        })
    });
    let mut wheel = city();
    let mut now = 0u32;
    g.bench_function("advance_one_second_800k_24h_class", |x| {
        x.iter(|| {
            now += 1;
            let mut fired = Vec::new();
            wheel.advance(now, |item, _| fired.push(item));
            // Keep the population constant: every expiry is re-armed a window later.
            for &item in &fired {
                wheel.insert(item, now + window);
            }
            fired.len()
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_decode,
    bench_route,
    bench_shard,
    bench_log,
    bench_timers
);
criterion_main!(benches);

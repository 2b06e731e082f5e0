//! The Markdown summary (`--markdown`): tables to paste into BENCHMARKS.md.

use crate::cli::{AckMode, Scenario};
use crate::report::{secs, LatencySummary, Report, SecondRow};
use std::fmt::Write as _;

/// Most rows of the per-second table; longer runs are shown in wider buckets.
const MAX_ROWS: usize = 60;

/// The report as Markdown.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let c = &r.counters;
    let _ = writeln!(
        s,
        "## loadgen `{}`: {} gateways, {} points, {} s\n",
        r.scenario.name(),
        r.gateways,
        r.points,
        r.duration_secs
    );
    let _ = writeln!(s, "| setting | value |\n|---|---|");
    let _ = writeln!(
        s,
        "| system | {} (ack: {}) |",
        r.label,
        match r.ack {
            AckMode::App => "app-level UplinkAck once durable",
            AckMode::Puback => "MQTT PUBACK",
        }
    );
    let _ = writeln!(s, "| scenario | {} |", r.scenario.name());
    let _ = writeln!(
        s,
        "| gateways connected | {} / {} in {:.2} s ({} connection errors) |",
        r.gateways_connected, r.gateways, r.connect_secs, r.connection_errors
    );
    let _ = writeln!(
        s,
        "| heartbeats offered | {:.1}/s{} |",
        r.target_rate,
        if r.heartbeat_from_class {
            " (each point at its device class interval)"
        } else {
            " (--rate)"
        }
    );
    let _ = writeln!(s, "| background alarms | {:.1}/s |", r.target_alarm_rate);
    let _ = writeln!(
        s,
        "| duration / warmup | {} s / {} s |",
        r.duration_secs, r.warmup_secs
    );
    let _ = writeln!(
        s,
        "| events sent | {} in {:.2} s = {:.1}/s |",
        r.events_sent, r.send_secs, r.achieved_rate
    );
    let _ = writeln!(
        s,
        "| result | {} |\n",
        if r.failures.is_empty() {
            "PASS".to_string()
        } else {
            format!("FAIL: {}", r.failures.join("; "))
        }
    );

    let _ = writeln!(s, "### Delivery\n");
    let _ = writeln!(s, "| what | count |\n|---|---:|");
    let rows: [(&str, u64); 12] = [
        ("heartbeats sent", c.heartbeats_sent),
        ("alarms sent", c.alarms_sent),
        (
            match r.ack {
                AckMode::App => "alarms acked durable",
                AckMode::Puback => "alarms acked (PUBACK)",
            },
            c.alarms_acked,
        ),
        ("alarms unacked at end", c.alarms_unacked),
        ("alarms rejected", c.alarms_rejected),
        ("alarm retransmissions", c.retransmissions),
        ("other events sent (clears)", c.clears_sent),
        ("events acked (accepted batches)", c.events_acked),
        ("batches sent", c.batches_sent),
        ("batches unacked at end", c.batches_unacked),
        ("publish stalls (client queue full)", c.publish_stalls),
        ("events due but unsent", c.events_unsent),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    if let Some(l) = &r.log {
        let _ = writeln!(
            s,
            "| output ({}): observed | {} |",
            l.source, l.alarms_observed
        );
        let _ = writeln!(s, "| output: missing | {} |", l.alarms_missing);
        let _ = writeln!(s, "| output: duplicates | {} |", l.duplicates);
    }
    s.push('\n');

    let _ = writeln!(
        s,
        "### Latency (ms, from intended send time to ack{})\n",
        if r.warmup_secs > 0.0 {
            format!("; first {} s excluded", r.warmup_secs)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        s,
        "| class | n | mean | p50 | p90 | p99 | p99.9 | max |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    let lat = |s: &mut String, name: &str, l: &LatencySummary| {
        let _ = writeln!(
            s,
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            l.count, l.mean_ms, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
    };
    lat(&mut s, "alarm (all)", &r.alarm_latency);
    for (src, l) in &r.alarm_latency_by_source {
        lat(&mut s, &format!("alarm: {src}"), l);
    }
    lat(&mut s, "heartbeat (to batch ack)", &r.heartbeat_latency);
    lat(&mut s, "batch ack round trip", &r.ack_rtt);
    if r.ack_transit.count > 0 {
        lat(
            &mut s,
            "ack transit (engine stamp to receipt)",
            &r.ack_transit,
        );
    }
    if let Some(l) = r.log.as_ref().and_then(|l| l.latency.as_ref()) {
        lat(&mut s, "alarm to output (ms resolution)", l);
    }
    s.push('\n');

    scenario_section(&mut s, r);

    if r.engine.is_some() || r.engine_metrics.is_some() || r.loadgen.is_some() {
        let _ = writeln!(s, "### Resources\n");
        let _ = writeln!(
            s,
            "| process (source) | RSS MB (end) | peak RSS MB | CPU s | cores |\n|---|---:|---:|---:|---:|"
        );
        if let Some(e) = &r.engine {
            let _ = writeln!(
                s,
                "| engine (/proc, pid {}) | {:.1} | {:.1} | {:.2} | {:.2} |",
                e.pid, e.rss_mb, e.peak_rss_mb, e.cpu_seconds, e.avg_cores
            );
        }
        if let Some(e) = &r.loadgen {
            let _ = writeln!(
                s,
                "| loadgen itself (/proc/self) | {:.1} | {:.1} | {:.2} | {:.2} |",
                e.rss_mb, e.peak_rss_mb, e.cpu_seconds, e.avg_cores
            );
        }
        if let Some(m) = &r.engine_metrics {
            let _ = writeln!(
                s,
                "| engine (/metrics) | {:.1} | {:.1} | {:.2} | {:.2} |",
                m.rss_mb, m.peak_rss_mb, m.cpu_seconds, m.avg_cores
            );
            let _ = writeln!(
                s,
                "\n| engine counter over the run | value |\n|---|---:|\n| ingest events | {} |\n| acks published | {} |\n| shed heartbeats | {} |\n| lost broker messages | {} |\n| dead-letter rejects | {} |\n| dead letters suppressed | {} |",
                m.ingest_events,
                m.acks_published,
                m.shed_events,
                m.lost_messages,
                m.deadletter_rejects,
                m.deadletter_suppressed
            );
            for (reason, n) in &m.deadletter_by_reason {
                let _ = writeln!(s, "| dead-letter rejects: {reason} | {n} |");
            }
        }
        s.push('\n');
    }

    per_second(&mut s, &r.timeline);
    s
}

fn scenario_section(s: &mut String, r: &Report) {
    let p = &r.plan;
    match r.scenario {
        Scenario::Steady => {}
        Scenario::Storm => {
            let _ = writeln!(s, "### Storm\n\n| what | value |\n|---|---:|");
            let _ = writeln!(
                s,
                "| fire house (village) | {} ({}) |",
                opt(p.fire_house),
                opt(p.fire_village)
            );
            let _ = writeln!(s, "| houses reached by the fire | {} |", p.fire_houses);
            let _ = writeln!(s, "| fire alarms planned | {} |", p.fire_alarms_planned);
            let _ = writeln!(s, "| burst alarms planned | {} |\n", p.storm_alarms_planned);
        }
        Scenario::Outage => {
            if let Some(o) = &r.outage {
                let _ = writeln!(s, "### Outage\n\n| what | value |\n|---|---:|");
                let _ = writeln!(s, "| gateways down | {} |", o.gateways_down);
                let _ = writeln!(s, "| gateways reconnected | {} |", o.gateways_reconnected);
                let _ = writeln!(s, "| reconnect attempts | {} |", o.reconnect_attempts);
                let _ = writeln!(
                    s,
                    "| time to all reconnected | {} |",
                    secs(o.secs_to_all_reconnected)
                );
                let _ = writeln!(
                    s,
                    "| median time to reconnect | {} |",
                    secs(o.reconnect_p50_secs)
                );
                let _ = writeln!(s, "| batches lost in flight | {} |\n", o.batches_lost);
            }
        }
        Scenario::Nuisance => {
            if let Some(n) = &r.nuisance {
                let _ = writeln!(s, "### Nuisance\n\n| what | value |\n|---|---:|");
                let _ = writeln!(
                    s,
                    "| kitchen/studio smoke alarms sent | {} |",
                    n.alarms_sent
                );
                let _ = writeln!(s, "| of those acked | {} |", n.alarms_acked);
                let _ = writeln!(s, "| clears sent | {} |", n.clears_sent);
                let _ = writeln!(
                    s,
                    "| fw.incidents closed as nuisance | {} |\n",
                    n.incidents_nuisance.map_or("-".into(), |v| v.to_string())
                );
            }
        }
        Scenario::Bad => {
            if let Some(b) = &r.bad {
                let k = &b.counters;
                let _ = writeln!(
                    s,
                    "### Bad input ({} gateways)\n\n| kind | sent | rejected (ack) |\n|---|---:|---:|",
                    b.gateways
                );
                let _ = writeln!(
                    s,
                    "| malformed protobuf | {} | {} |",
                    k.malformed_sent, k.malformed_rejected
                );
                let _ = writeln!(
                    s,
                    "| oversize payload | {} | {} |",
                    k.oversize_sent, k.oversize_rejected
                );
                let _ = writeln!(
                    s,
                    "| foreign-point alarms | {} | {} |",
                    k.foreign_events_sent, k.foreign_events_rejected
                );
                let _ = writeln!(
                    s,
                    "| batch naming another gateway | {} | {} |",
                    k.mismatch_sent, k.mismatch_rejected
                );
                let _ = writeln!(
                    s,
                    "| publish on another gateway's topic | {} | (no ack) |",
                    k.wrong_topic_sent
                );
                let _ = writeln!(
                    s,
                    "| accepted although bad | - | {} |",
                    k.foreign_alarms_accepted + k.mismatch_accepted
                );
                if let Some(dl) = &b.deadletter_by_reason {
                    let _ = writeln!(s, "\n| fw.deadletter reason | records |\n|---|---:|");
                    for (reason, n) in dl {
                        let _ = writeln!(s, "| {reason} | {n} |");
                    }
                }
                s.push('\n');
            }
        }
    }
}

fn opt(v: Option<u32>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

fn per_second(s: &mut String, rows: &[SecondRow]) {
    if rows.is_empty() {
        return;
    }
    let width = rows.len().div_ceil(MAX_ROWS).max(1);
    let observed = rows.iter().any(|r| r.alarms_observed.is_some());
    let _ = writeln!(
        s,
        "### Over time ({}; alarm latency by intended send time)\n",
        if width == 1 {
            "per second".to_string()
        } else {
            format!("per {width} s, rates per second")
        }
    );
    let _ = writeln!(
        s,
        "| t (s) | events sent/s | events acked/s | alarms sent/s | alarms acked/s |{} alarm p50 ms | alarm p99 ms | alarm max ms |",
        if observed { " on output/s |" } else { "" }
    );
    let _ = writeln!(
        s,
        "|---:|---:|---:|---:|---:|{}---:|---:|---:|",
        if observed { "---:|" } else { "" }
    );
    for chunk in rows.chunks(width) {
        let n = chunk.len() as f64;
        let sum = |f: fn(&SecondRow) -> u64| chunk.iter().map(f).sum::<u64>() as f64 / n;
        // Latency of a bucket: the worst second's figures (percentiles do not average).
        let worst = |f: fn(&SecondRow) -> f64| chunk.iter().map(f).fold(0.0, f64::max);
        let obs = if observed {
            format!(
                " {:.0} |",
                chunk
                    .iter()
                    .map(|r| r.alarms_observed.unwrap_or(0))
                    .sum::<u64>() as f64
                    / n
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.0} | {:.1} | {:.1} |{obs} {:.2} | {:.2} | {:.2} |",
            chunk[0].t,
            sum(|r| r.events_sent),
            sum(|r| r.events_acked),
            sum(|r| r.alarms_sent),
            sum(|r| r.alarms_acked),
            worst(|r| r.alarm_latency_p50_ms),
            worst(|r| r.alarm_latency_p99_ms),
            worst(|r| r.alarm_latency_max_ms),
        );
    }
    s.push('\n');
}

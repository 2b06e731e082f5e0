//! The load generator (the `loadgen` library) against an in-process engine: a short storm
//! scenario in which every alarm it sent is acked and found exactly once in `fw.alarms`;
//! the `--ack puback` mode against the engine; and, where Debian's `mosquitto` broker is
//! installed, the Mosquitto mode of the benchmark (PUBACK acks, a subscriber observing).
//! Functional only: no timing assertions.

use crate::harness::Fixture;

/// A 2 s storm with PUBACKs as the acks (the shape both `--ack puback` tests share), plus
/// `extra` (registry, port, label, observers, seed).
fn short_puback_storm(extra: &[&str]) -> ::loadgen::Args {
    let base = [
        "loadgen",
        "--scenario",
        "storm",
        "--ack",
        "puback",
        "--duration",
        "2",
        "--rate",
        "200",
        "--storm-at",
        "0.5",
        "--storm-secs",
        "1",
        "--storm-rate",
        "100",
        "--drain-secs",
        "10",
        "--no-progress",
    ];
    ::loadgen::Args::try_parse_strs(base.iter().chain(extra)).unwrap()
}

#[test]
fn storm_scenario_every_alarm_acked_and_observed_once() {
    let fx = Fixture::new(600);
    let engine = fx.start();
    let registry = fx.config.registry.path.to_str().unwrap().to_string();
    let log_dir = fx.log_dir().to_str().unwrap().to_string();
    let port = fx.v4_port().to_string();
    let metrics = format!("http://{}/metrics", engine.http);
    let out = |name: &str| fx.dir.path().join(name).to_str().unwrap().to_string();
    let (json, md, svg) = (out("report.json"), out("report.md"), out("report.svg"));
    let args = ::loadgen::Args::try_parse_strs([
        "loadgen",
        "--scenario",
        "storm",
        "--registry",
        &registry,
        "--port",
        &port,
        "--duration",
        "3",
        "--rate",
        "200",
        "--alarm-rate",
        "5",
        "--storm-at",
        "0.5",
        "--storm-secs",
        "1.5",
        "--storm-rate",
        "100",
        "--fire-spread-secs",
        "1",
        "--drain-secs",
        "10",
        "--log-dir",
        &log_dir,
        "--metrics-url",
        &metrics,
        "--json",
        &json,
        "--markdown",
        &md,
        "--plot",
        &svg,
        "--seed",
        "5",
        "--no-progress",
    ])
    .unwrap();
    let report = ::loadgen::run_blocking(args).unwrap();
    engine.shutdown().unwrap();

    let table = report.table();
    eprintln!("{table}");
    let c = &report.counters;
    assert!(report.failures.is_empty(), "{table}");
    assert_eq!(report.gateways_connected, report.gateways, "{table}");
    assert!(report.plan.fire_alarms_planned > 0, "{table}");
    assert_eq!(report.plan.storm_alarms_planned, 150, "{table}");
    // Every alarm sent (background, fire and burst) was acked durable, none rejected.
    assert!(
        c.alarms_sent >= report.plan.fire_alarms_planned + 150,
        "{table}"
    );
    assert_eq!(c.alarms_acked, c.alarms_sent, "{table}");
    assert_eq!(c.alarms_unacked, 0, "{table}");
    assert_eq!(c.alarms_rejected, 0, "{table}");
    assert_eq!(c.alarms_unsent, 0, "{table}");
    // ... and is in fw.alarms exactly once.
    let log = report.log.as_ref().expect("log check");
    assert_eq!(log.alarms_observed, c.alarms_sent, "{table}");
    assert_eq!(log.alarms_missing, 0, "{table}");
    assert_eq!(log.duplicates, 0, "{table}");
    for source in ["fire", "storm"] {
        assert!(
            report.alarm_latency_by_source.contains_key(source),
            "no {source} latency: {table}"
        );
    }
    assert!(report.engine_metrics.is_some(), "{table}");
    assert!(!report.timeline.is_empty());

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(json["scenario"], "storm");
    assert_eq!(json["alarms_acked"], c.alarms_sent);
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(md.contains("| alarm: storm |"), "{md}");
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
}

/// `--ack puback` against the engine (rumqttd PUBACKs each publish on receipt): the PUBACK
/// of every publish is matched to its batch, so every alarm counts as acked; `--log-dir`
/// still checks that each is in fw.alarms once.
#[test]
fn puback_mode_matches_every_puback_to_its_batch() {
    let fx = Fixture::new(300);
    let engine = fx.start();
    let registry = fx.config.registry.path.to_str().unwrap().to_string();
    let log_dir = fx.log_dir().to_str().unwrap().to_string();
    let port = fx.v4_port().to_string();
    let args = short_puback_storm(&[
        "--label",
        "firewatch-puback",
        "--registry",
        &registry,
        "--port",
        &port,
        "--fire-spread-secs",
        "1",
        "--log-dir",
        &log_dir,
        "--seed",
        "7",
    ]);
    let report = ::loadgen::run_blocking(args).unwrap();
    engine.shutdown().unwrap();
    let table = report.table();
    let c = &report.counters;
    assert!(report.failures.is_empty(), "{table}");
    assert_eq!(report.ack, ::loadgen::AckMode::Puback);
    assert!(c.alarms_sent >= 100, "{table}");
    assert_eq!(c.alarms_acked, c.alarms_sent, "{table}");
    assert_eq!(c.acks_received, c.batches_sent, "{table}");
    assert_eq!(c.batches_unacked, 0, "{table}");
    let log = report.log.as_ref().expect("log check");
    assert_eq!(log.alarms_observed, c.alarms_sent, "{table}");
}

/// Against Debian's Mosquitto (skipped when /usr/sbin/mosquitto is not installed): PUBACK
/// acks and a subscriber on the uplink topics that sees every alarm.
#[test]
fn mosquitto_puback_and_subscriber_observe_every_alarm() {
    let bin = std::path::Path::new("/usr/sbin/mosquitto");
    if !bin.exists() {
        eprintln!("skipping: /usr/sbin/mosquitto not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = crate::harness::free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "allow_anonymous true\npersistence false\nmax_queued_messages 100000\nlistener {port} 127.0.0.1\n"
        ),
    )
    .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _broker = Kill(
        std::process::Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    crate::harness::eventually(10, "mosquitto listening", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let registry = concat!(env!("CARGO_MANIFEST_DIR"), "/config/registry.sample.csv");
    let port = port.to_string();
    let args = short_puback_storm(&[
        "--observe-mqtt",
        "--label",
        "mosquitto",
        "--registry",
        registry,
        "--gateways",
        "10",
        "--port",
        &port,
        "--seed",
        "9",
    ]);
    let report = ::loadgen::run_blocking(args).unwrap();
    let table = report.table();
    let c = &report.counters;
    assert!(report.failures.is_empty(), "{table}");
    assert_eq!(c.alarms_acked, c.alarms_sent, "{table}");
    let log = report.log.as_ref().expect("observer");
    assert_eq!(log.alarms_observed, c.alarms_sent, "{table}");
    assert_eq!(log.alarms_missing, 0, "{table}");
    assert!(log.latency.is_some(), "{table}");
}

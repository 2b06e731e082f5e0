//! Test harness: an engine on ephemeral ports with a generated registry, and a blocking
//! rumqttc gateway client.

use firewatch::app::Engine;
use firewatch::auth::DEV_SECRET;
use firewatch::config::Config;
use firewatch::eventlog::{LogReader, Record};
use firewatch::registry::Registry;
use firewatch_proto::{EventKind, PointEvent, UplinkAck, UplinkBatch};
use prost::Message;
use rumqttc::{Client, Connection, Event, MqttOptions, Packet, QoS};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A data directory with a generated registry and credentials, and a config for it.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub registry: Registry,
    pub config: Config,
}

impl Fixture {
    pub fn new(points: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let reg_path = dir.path().join("registry.csv");
        let cred_path = dir.path().join("credentials.csv");
        let registry =
            firewatch::cli::generate_registry(points, 7, &reg_path, &cred_path, DEV_SECRET)
                .unwrap();
        let mut config = Config {
            data_dir: dir.path().join("data"),
            ..Default::default()
        };
        config.registry.path = reg_path;
        config.mqtt.credentials = cred_path;
        config.mqtt.listen_v4 = Some(format!("127.0.0.1:{}", free_port()).parse().unwrap());
        config.mqtt.listen_v5 = Some(format!("127.0.0.1:{}", free_port()).parse().unwrap());
        config.http.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        config.pipeline.shards = 2;
        Fixture {
            dir,
            registry,
            config,
        }
    }

    pub fn log_dir(&self) -> PathBuf {
        self.config.log_dir()
    }

    pub fn v4_port(&self) -> u16 {
        self.config.mqtt.listen_v4.unwrap().port()
    }

    pub fn start(&self) -> Engine {
        firewatch::telemetry::prometheus();
        firewatch::app::start(self.config.clone()).unwrap()
    }

    /// The first gateway id and its points (registry point ids).
    pub fn gateway(&self, n: u32) -> (String, Vec<u64>) {
        let points = self
            .registry
            .gateway_points(n)
            .iter()
            .map(|&i| self.registry.point_id(i))
            .collect();
        (self.registry.gateway_id(n).to_string(), points)
    }
}

/// Every record of a topic, decoded.
pub fn read_topic<M: Message + Default>(dir: &Path, topic: &str) -> Vec<(Record, M)> {
    LogReader::read_all(dir, topic)
        .unwrap()
        .into_iter()
        .map(|r| {
            let m = M::decode(r.value.as_slice()).unwrap();
            (r, m)
        })
        .collect()
}

/// A blocking MQTT gateway.
pub struct Gateway {
    pub id: String,
    pub client: Client,
    conn: Connection,
}

impl Gateway {
    /// Connects as `username` with `secret`; Err when the engine refuses.
    pub fn connect_as(
        port: u16,
        client_id: &str,
        username: &str,
        secret: &str,
    ) -> Result<Gateway, String> {
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_credentials(username, secret);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1 << 21, 1 << 21);
        let (client, mut conn) = Client::new(opts, 64);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match conn.recv_timeout(Duration::from_millis(500)) {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    return Ok(Gateway {
                        id: username.to_string(),
                        client,
                        conn,
                    })
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => {}
            }
        }
        Err("no connack".into())
    }

    pub fn connect(port: u16, id: &str) -> Gateway {
        Self::connect_as(port, id, id, DEV_SECRET).unwrap()
    }

    /// Subscribes to its ack topic and waits for the SUBACK.
    pub fn subscribe_acks(&mut self) {
        self.client
            .subscribe(format!("fw/v1/gw/{}/ack", self.id), QoS::AtLeastOnce)
            .unwrap();
        self.client
            .subscribe(format!("fw/v1/gw/{}/ack/json", self.id), QoS::AtLeastOnce)
            .unwrap();
        let mut subacks = 0;
        self.pump(Duration::from_secs(10), |p| {
            if let Packet::SubAck(_) = p {
                subacks += 1;
            }
            subacks == 2
        });
        assert_eq!(subacks, 2, "no suback");
    }

    /// Polls the connection until `f` says stop or `timeout` passes; true if stopped.
    pub fn pump(&mut self, timeout: Duration, mut f: impl FnMut(&Packet) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.conn.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(Event::Incoming(p))) => {
                    if f(&p) {
                        return true;
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return false,
                Err(_) => {}
            }
        }
        false
    }

    pub fn publish(&mut self, suffix: &str, payload: Vec<u8>) {
        let topic = format!("fw/v1/gw/{}/{suffix}", self.id);
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .unwrap();
    }

    pub fn send_batch(&mut self, batch: &UplinkBatch) {
        self.publish("up", batch.encode_to_vec());
    }

    /// The next protobuf ack (or JSON ack decoded into the same type).
    pub fn next_ack(&mut self, timeout: Duration) -> Option<UplinkAck> {
        let mut got = None;
        self.pump(timeout, |p| {
            if let Packet::Publish(p) = p {
                if p.topic.ends_with("/ack") {
                    got = UplinkAck::decode(p.payload.as_ref()).ok();
                    return true;
                }
                if p.topic.ends_with("/ack/json") {
                    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                    got = Some(json_ack(&v));
                    return true;
                }
            }
            false
        });
        got
    }

    /// Whether the connection stays up for `d` (false when the engine closed it).
    pub fn stays_connected(&mut self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            if let Ok(Err(_)) = self.conn.recv_timeout(Duration::from_millis(100)) {
                return false;
            }
        }
        true
    }
}

fn json_ack(v: &serde_json::Value) -> UplinkAck {
    use firewatch_proto::{AckStatus, RejectReason};
    let status = match v["status"].as_str() {
        Some("accepted") => AckStatus::Accepted as i32,
        Some("rejected") => AckStatus::Rejected as i32,
        _ => 0,
    };
    let reason = v["reason"]
        .as_str()
        .and_then(|r| RejectReason::from_str_name(&r.to_ascii_uppercase()))
        .map_or(0, |r| r as i32);
    UplinkAck {
        gateway_id: v["gateway_id"].as_str().unwrap_or("").into(),
        batch_seq: v["batch_seq"].as_u64().unwrap_or(0),
        status,
        reason,
        detail: v["detail"].as_str().unwrap_or("").into(),
        durable: v["durable"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| firewatch_proto::EventRef {
                        point_id: e["point_id"].as_u64().unwrap_or(0),
                        device_seq: e["device_seq"].as_u64().unwrap_or(0) as u32,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        rejected: vec![],
        acked_at_ms: v["acked_at_ms"].as_i64().unwrap_or(0),
    }
}

pub fn event(point_id: u64, kind: EventKind, seq: u32) -> PointEvent {
    PointEvent {
        point_id,
        kind: kind as i32,
        device_seq: seq,
        device_time_ms: firewatch::clock::unix_ms(),
        value: 0.0,
        battery_pct: 80,
        rssi_dbm: -70,
    }
}

pub fn batch(gw: &str, seq: u64, events: Vec<PointEvent>) -> UplinkBatch {
    UplinkBatch {
        gateway_id: gw.into(),
        batch_seq: seq,
        sent_at_ms: firewatch::clock::unix_ms(),
        events,
    }
}

/// GET a path from the engine's HTTP port.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    // A connection refused or reset (an engine starting or stopping) reads as code 0.
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let mut out = String::new();
    let sent = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    if sent.is_err() || s.read_to_string(&mut out).is_err() {
        return (0, String::new());
    }
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

/// The value of a counter line `name{labels}` in Prometheus text (0 when absent).
pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name_and_labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls until `f` is true (or panics after `secs`).
pub fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// Writes the fixture's config as a TOML file (for a subprocess engine); `extra` is appended
/// inside `[pipeline]` (e.g. shorter deadlines), followed by any further sections.
pub fn write_config(fx: &Fixture, extra: &str) -> PathBuf {
    let c = &fx.config;
    let text = format!(
        "data_dir = {:?}\n[mqtt]\nlisten_v4 = \"{}\"\nlisten_v5 = \"{}\"\ncredentials = {:?}\n[http]\nlisten = \"{}\"\n[registry]\npath = {:?}\n[pipeline]\nshards = 2\n{extra}\n",
        c.data_dir,
        c.mqtt.listen_v4.unwrap(),
        c.mqtt.listen_v5.unwrap(),
        c.mqtt.credentials,
        c.http.listen,
        c.registry.path
    );
    let p = fx.dir.path().join("firewatch.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Starts `firewatch run --config` as a child process and waits until it is ready.
pub fn spawn_engine(fx: &Fixture, config_path: &Path) -> std::process::Child {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_firewatch"))
        .args(["run", "--config"])
        .arg(config_path)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    eventually(30, "engine ready", || {
        std::net::TcpStream::connect(fx.config.http.listen).is_ok()
            && http_get(fx.config.http.listen, "/readyz").0 == 200
    });
    child
}

//! One gateway's MQTT session: a task that owns the rumqttc `EventLoop`, (re)subscribes to
//! the ack topic after every CONNACK, decodes acks and hands them to the sender task.
//!
//! With `--ack puback` (a plain broker) there is no ack subscription: the session is ready
//! at CONNACK, and each PUBACK is handed over as the ordinal of the publish it answers
//! (the n-th `try_publish` of the session is the n-th new packet id rumqttc sends; a
//! packet id resent after a reconnect keeps its ordinal).
//!
//! The poll task never publishes uplinks (rumqttc#1025: a task that both polls and blocks
//! on publishing can deadlock); the sender uses `try_publish` and only while `subscribed`.

use crate::cli::AckMode;
use firewatch_proto::UplinkAck;
use prost::Message;
use rand::Rng;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Requests the rumqttc client queues before `try_publish` reports the channel full.
const REQUEST_CAPACITY: usize = 512;
/// Connection errors printed in full; later ones are only counted.
const PRINTED_ERRORS: usize = 10;
/// Seconds a session waits for its CONNACK (rumqttc defaults to 5).
const CONNECT_TIMEOUT_SECS: u64 = 30;
static ERRORS_PRINTED: AtomicUsize = AtomicUsize::new(0);

/// Where and how gateways connect.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Password of every gateway.
    pub secret: String,
    /// What acknowledges a batch.
    pub ack: AckMode,
}

/// Connection state shared between the poll task, the sender and the report.
#[derive(Debug, Default)]
pub struct LinkState {
    /// A CONNACK was received and no error since.
    pub connected: AtomicBool,
    /// The ack subscription of the current connection was granted.
    pub subscribed: AtomicBool,
    /// Some connection attempt succeeded.
    pub ever_connected: AtomicBool,
    /// Connection errors (failed connects and dropped connections).
    pub connection_errors: AtomicU64,
    /// Ack payloads that did not decode.
    pub bad_acks: AtomicU64,
    /// The sender is done; the poll task ends at the next disconnect or error.
    pub stopping: AtomicBool,
    /// When the last ack subscription was granted: µs since [`epoch`] (0: never).
    pub subscribed_at_us: AtomicU64,
}

/// A process-wide time origin for instants kept in atomics.
pub fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl LinkState {
    /// When the last ack subscription was granted.
    pub fn subscribed_at(&self) -> Option<Instant> {
        match self.subscribed_at_us.load(Ordering::Acquire) {
            0 => None,
            us => Some(epoch() + Duration::from_micros(us)),
        }
    }
}

/// An ack and when the poll task received it.
#[derive(Debug)]
pub struct Ack {
    /// Receipt time (the latency end point).
    pub received: Instant,
    /// The decoded ack (`--ack app`).
    pub ack: UplinkAck,
    /// `--ack puback`: the PUBACK of the session's n-th publish (from 1); `ack` is empty.
    pub puback: Option<u64>,
}

/// A running gateway session.
pub struct Link {
    /// Client handle for `try_publish` / `try_disconnect`.
    pub client: AsyncClient,
    /// Shared connection state.
    pub state: Arc<LinkState>,
    /// Acks from the poll task.
    pub acks: mpsc::UnboundedReceiver<Ack>,
}

/// Starts the session of gateway `id`; `ready` counts sessions whose ack subscription was
/// granted (once each). Returns the session and its poll task.
pub fn spawn(id: &str, cfg: &LinkConfig, ready: Arc<AtomicUsize>) -> (Link, JoinHandle<()>) {
    let mut opts = MqttOptions::new(id, cfg.host.clone(), cfg.port);
    opts.set_credentials(id, cfg.secret.clone());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    opts.set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(opts, REQUEST_CAPACITY);
    // A gateway sends small packets that must not wait for Nagle.
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    // Wait up to 30 s for the CONNACK, as a real gateway would (rumqttc's default is 5 s).
    // With the 5 s default, a reconnect storm against a loaded broker livelocks: each
    // timed-out attempt reconnects with the same client id, and the broker drops the
    // previous half-built session for the new one.
    net.set_connection_timeout(CONNECT_TIMEOUT_SECS);
    eventloop.set_network_options(net);
    let _ = epoch();
    let state = Arc::new(LinkState::default());
    let (tx, acks) = mpsc::unbounded_channel();
    let poller = Poller {
        id: id.to_string(),
        ack_topic: format!("fw/v1/gw/{id}/ack"),
        client: client.clone(),
        state: state.clone(),
        tx,
        ready,
        counted: false,
        ack_mode: cfg.ack,
        pkid_ordinal: HashMap::new(),
        publishes: 0,
    };
    let task = tokio::spawn(poller.run(eventloop));
    (
        Link {
            client,
            state,
            acks,
        },
        task,
    )
}

struct Poller {
    id: String,
    ack_topic: String,
    client: AsyncClient,
    state: Arc<LinkState>,
    tx: mpsc::UnboundedSender<Ack>,
    ready: Arc<AtomicUsize>,
    counted: bool,
    ack_mode: AckMode,
    /// `--ack puback`: packet id -> ordinal of the publish awaiting its PUBACK.
    pkid_ordinal: HashMap<u16, u64>,
    /// `--ack puback`: publishes of this session so far.
    publishes: u64,
}

impl Poller {
    async fn run(mut self, mut eventloop: EventLoop) {
        let mut failures: u32 = 0;
        let mut want_subscribe = false;
        loop {
            let event = eventloop.poll().await;
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    failures = 0;
                    self.state.connected.store(true, Ordering::Release);
                    self.state.ever_connected.store(true, Ordering::Release);
                    want_subscribe = self.ack_mode == AckMode::App;
                    if !want_subscribe {
                        self.mark_ready();
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let granted = ack
                        .return_codes
                        .iter()
                        .all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure));
                    if granted {
                        self.mark_ready();
                    } else {
                        self.print_error(&format!("subscription to {} refused", self.ack_topic));
                    }
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid)))
                    if self.ack_mode == AckMode::Puback =>
                {
                    let n = &mut self.publishes;
                    self.pkid_ordinal.entry(pkid).or_insert_with(|| {
                        *n += 1;
                        *n
                    });
                }
                Ok(Event::Incoming(Packet::PubAck(p))) if self.ack_mode == AckMode::Puback => {
                    let received = Instant::now();
                    if let Some(ordinal) = self.pkid_ordinal.remove(&p.pkid) {
                        let _ = self.tx.send(Ack {
                            received,
                            ack: UplinkAck::default(),
                            puback: Some(ordinal),
                        });
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let received = Instant::now();
                    match UplinkAck::decode(p.payload) {
                        Ok(ack) => {
                            let _ = self.tx.send(Ack {
                                received,
                                ack,
                                puback: None,
                            });
                        }
                        Err(_) => {
                            self.state.bad_acks.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    if self.state.stopping.load(Ordering::Acquire) {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.state.connected.store(false, Ordering::Release);
                    self.state.subscribed.store(false, Ordering::Release);
                    want_subscribe = false;
                    if self.state.stopping.load(Ordering::Acquire) {
                        break;
                    }
                    self.state.connection_errors.fetch_add(1, Ordering::Relaxed);
                    self.print_error(&e.to_string());
                    failures = failures.saturating_add(1);
                    // rumqttc reconnects on the next poll; wait first so that a refusing or
                    // absent broker is not hammered.
                    tokio::time::sleep(backoff(failures)).await;
                }
            }
            if want_subscribe
                && self
                    .client
                    .try_subscribe(self.ack_topic.clone(), QoS::AtLeastOnce)
                    .is_ok()
            {
                want_subscribe = false;
            }
        }
    }

    /// The session can publish: its ack subscription was granted (`--ack app`) or it is
    /// connected (`--ack puback`).
    fn mark_ready(&mut self) {
        let us = Instant::now()
            .saturating_duration_since(epoch())
            .as_micros();
        self.state
            .subscribed_at_us
            .store((us as u64).max(1), Ordering::Release);
        self.state.subscribed.store(true, Ordering::Release);
        if !self.counted {
            self.counted = true;
            self.ready.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn print_error(&self, what: &str) {
        let n = ERRORS_PRINTED.fetch_add(1, Ordering::Relaxed);
        if n < PRINTED_ERRORS {
            eprintln!("loadgen: gateway {}: {what}", self.id);
        } else if n == PRINTED_ERRORS {
            eprintln!("loadgen: further connection errors are only counted");
        }
    }
}

/// Jittered exponential back-off: 100 ms doubling per failure up to 5 s, times 0.5..1.0.
pub fn backoff(failures: u32) -> Duration {
    let base_ms = (100u64 << failures.saturating_sub(1).min(6)).min(5_000);
    let factor: f64 = rand::thread_rng().gen_range(0.5..=1.0);
    Duration::from_millis((base_ms as f64 * factor) as u64)
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(100));
        assert!(backoff(1) >= Duration::from_millis(50));
        assert!(backoff(4) >= Duration::from_millis(400));
        for n in [7, 20, u32::MAX] {
            assert!(backoff(n) <= Duration::from_secs(5));
            assert!(backoff(n) >= Duration::from_millis(2_500));
        }
    }
}

//! A thin `rumqttd::protocol::Protocol` wrapper that binds every packet of a connection to
//! the identity that authenticated it.
//!
//! rumqttd 0.20 has no topic ACL and its local link does not say who published a message.
//! Each connection owns its own clone of the protocol value, which decodes that
//! connection's CONNECT and every later packet, so the wrapper can:
//! - verify the CONNECT login against the credentials file (no CONNACK on failure: the
//!   socket is closed, as rumqttd itself does), counted and dead-lettered;
//! - pin the MQTT client id under the username, so no client can take over another
//!   gateway's session;
//! - rewrite every PUBLISH topic (and the will topic) to `fwi/{username}/{topic}`, so the
//!   engine's single `fwi/#` subscription sees who sent what; topic checks happen in
//!   [`super::Ingest`], which dead-letters wrong topics with the real identity;
//! - refuse subscriptions outside the client's own `fw/v1/gw/{id}/` (or
//!   `fw/v1/station/{id}/`) prefix by closing the connection;
//! - resolve MQTT 5 topic aliases itself (the rewritten topic must be complete).

use crate::auth::{Credentials, Identity, Role};
use crate::sink::{DeadLetter, DeadLetterTx};
use crate::telemetry::names;
use bytes::Bytes;
use firewatch_proto::RejectReason;
use rumqttd::protocol::{Error, Packet, Protocol};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// Prefix of rewritten uplink topics: `fwi/{username}/{original topic}`.
pub const INTERNAL_PREFIX: &str = "fwi/";

/// Most MQTT 5 topic aliases one connection may define.
const MAX_ALIASES: usize = 256;

/// Connection presence, shared by all connections. Transitions (first connection up,
/// last connection down) are sent to ingest, which aggregates gateway troubles.
#[derive(Default)]
pub struct Presence {
    sessions: Mutex<HashMap<Arc<str>, u32>>,
    connected: AtomicI64,
    events: Option<crossbeam_channel::Sender<(Arc<str>, bool)>>,
    closing: std::sync::atomic::AtomicBool,
}

impl Presence {
    /// Presence that reports transitions on `events`.
    pub fn with_events(events: crossbeam_channel::Sender<(Arc<str>, bool)>) -> Self {
        Presence {
            events: Some(events),
            ..Default::default()
        }
    }

    /// Stops reporting transitions (shutdown: closing every connection is not an outage).
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    fn report(&self, who: &Arc<str>, up: bool) {
        if self.closing.load(Ordering::SeqCst) {
            return;
        }
        if let Some(tx) = &self.events {
            let _ = tx.try_send((who.clone(), up));
        }
    }

    /// Identities with at least one live connection.
    pub fn connected(&self) -> i64 {
        self.connected.load(Ordering::Relaxed)
    }

    /// Whether `username` has a live connection.
    pub fn is_connected(&self, username: &str) -> bool {
        self.sessions
            .lock()
            .map(|m| m.contains_key(username))
            .unwrap_or(false)
    }

    fn up(&self, who: &Arc<str>) {
        if let Ok(mut m) = self.sessions.lock() {
            let n = m.entry(who.clone()).or_insert(0);
            *n += 1;
            if *n == 1 {
                let c = self.connected.fetch_add(1, Ordering::Relaxed) + 1;
                metrics::gauge!(names::INGEST_CONNECTED_CLIENTS).set(c as f64);
                self.report(who, true);
            }
        }
    }

    fn down(&self, who: &Arc<str>) {
        if let Ok(mut m) = self.sessions.lock() {
            if let Some(n) = m.get_mut(who) {
                *n -= 1;
                if *n == 0 {
                    m.remove(who);
                    let c = self.connected.fetch_sub(1, Ordering::Relaxed) - 1;
                    metrics::gauge!(names::INGEST_CONNECTED_CLIENTS).set(c as f64);
                    self.report(who, false);
                }
            }
        }
    }
}

/// What every connection's guard shares.
pub struct GuardShared {
    /// Who may connect.
    pub credentials: Credentials,
    /// Where refusals are recorded.
    pub deadletter: DeadLetterTx,
    /// Who is connected.
    pub presence: Arc<Presence>,
}

/// Live while a connection is authenticated; its drop marks the identity offline.
struct Session {
    identity: Identity,
    topic_prefix: Bytes,
    allowed_sub_prefix: String,
    presence: Arc<Presence>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.presence.down(&self.identity.username);
    }
}

/// The wrapper; `P` is rumqttd's `V4` or `V5`.
pub struct GuardedProtocol<P> {
    inner: P,
    shared: Arc<GuardShared>,
    session: Option<Session>,
    aliases: HashMap<u16, Bytes>,
}

impl<P: Clone> Clone for GuardedProtocol<P> {
    /// A clone is a fresh, unauthenticated connection state.
    fn clone(&self) -> Self {
        GuardedProtocol::new(self.inner.clone(), self.shared.clone())
    }
}

impl<P> GuardedProtocol<P> {
    /// Wraps `inner`.
    pub fn new(inner: P, shared: Arc<GuardShared>) -> Self {
        GuardedProtocol {
            inner,
            shared,
            session: None,
            aliases: HashMap::new(),
        }
    }

    fn refuse(&self, who: &str, reason: RejectReason, topic: &str, detail: String) {
        self.shared.deadletter.send(DeadLetter {
            gateway_id: who.to_string(),
            topic: topic.to_string(),
            reason,
            detail,
            raw: Bytes::new(),
            point_id: 0,
            device_seq: 0,
        });
    }

    fn on_connect(&mut self, packet: Packet) -> Result<Packet, Error> {
        let Packet::Connect(mut connect, props, will, will_props, login) = packet else {
            return Err(Error::IncorrectPacketFormat);
        };
        if self.session.is_some() {
            // A second CONNECT is a protocol violation [MQTT-3.1.0-2].
            return Err(Error::IncorrectPacketFormat);
        }
        let user = login.as_ref().map_or("", |l| l.username.as_str());
        let identity = login.as_ref().and_then(|l| {
            self.shared
                .credentials
                .verify(&l.username, l.password.as_bytes())
        });
        let Some(identity) = identity else {
            metrics::counter!(names::INGEST_AUTH_FAILURES_TOTAL).increment(1);
            let detail = if login.is_none() {
                "connect without username/password".to_string()
            } else {
                "unknown username or wrong password".to_string()
            };
            self.refuse(user, RejectReason::AuthFailed, "", detail);
            return Err(Error::InvalidConnectReturnCode(5));
        };
        let name = identity.username.to_string();
        connect.client_id = if connect.client_id.is_empty() || connect.client_id == name {
            name.clone()
        } else {
            format!("{name}:{}", connect.client_id)
        };
        let topic_prefix = Bytes::from(format!("{INTERNAL_PREFIX}{name}/"));
        let will = will.map(|mut w| {
            w.topic = prefixed(&topic_prefix, &w.topic);
            w
        });
        let allowed_sub_prefix = match identity.role {
            Role::Gateway => format!("fw/v1/gw/{name}/"),
            Role::Station => {
                let id = crate::auth::station_id_of(&name).unwrap_or(0);
                format!("fw/v1/station/{id}/")
            }
        };
        self.shared.presence.up(&identity.username);
        self.session = Some(Session {
            identity,
            topic_prefix,
            allowed_sub_prefix,
            presence: self.shared.presence.clone(),
        });
        Ok(Packet::Connect(connect, props, will, will_props, login))
    }
}

fn prefixed(prefix: &Bytes, topic: &Bytes) -> Bytes {
    let mut v = Vec::with_capacity(prefix.len() + topic.len());
    v.extend_from_slice(prefix);
    v.extend_from_slice(topic);
    Bytes::from(v)
}

impl<P: Protocol> Protocol for GuardedProtocol<P> {
    fn read_mut(&mut self, stream: &mut bytes::BytesMut, max_size: usize) -> Result<Packet, Error> {
        let packet = match self.inner.read_mut(stream, max_size) {
            Ok(p) => p,
            Err(Error::PayloadSizeLimitExceeded(n)) => {
                metrics::counter!(names::INGEST_REJECTED_TOTAL, "reason" => "oversize_packet")
                    .increment(1);
                let who = self
                    .session
                    .as_ref()
                    .map_or("", |s| &*s.identity.username)
                    .to_string();
                self.refuse(
                    &who,
                    RejectReason::Oversize,
                    "",
                    format!("packet exceeds mqtt.max_packet_bytes by {n} bytes; connection closed"),
                );
                return Err(Error::PayloadSizeLimitExceeded(n));
            }
            Err(e) => return Err(e),
        };
        match packet {
            Packet::Connect(..) => self.on_connect(packet),
            Packet::Publish(mut publish, mut props) => {
                let Some(session) = &self.session else {
                    return Err(Error::IncorrectPacketFormat);
                };
                if let Some(alias) = props.as_mut().and_then(|p| p.topic_alias.take()) {
                    if publish.topic.is_empty() {
                        publish.topic = self
                            .aliases
                            .get(&alias)
                            .cloned()
                            .ok_or(Error::MalformedPacket)?;
                    } else if self.aliases.len() < MAX_ALIASES || self.aliases.contains_key(&alias)
                    {
                        self.aliases.insert(alias, publish.topic.clone());
                    } else {
                        return Err(Error::MalformedPacket);
                    }
                }
                publish.topic = prefixed(&session.topic_prefix, &publish.topic);
                Ok(Packet::Publish(publish, props))
            }
            Packet::Subscribe(subscribe, props) => {
                let Some(session) = &self.session else {
                    return Err(Error::IncorrectPacketFormat);
                };
                for f in &subscribe.filters {
                    let own = f.path.starts_with(&session.allowed_sub_prefix)
                        && !f.path[session.allowed_sub_prefix.len()..].contains(['+', '#']);
                    if !own {
                        metrics::counter!(names::INGEST_REJECTED_TOTAL, "reason" => "forbidden_subscription")
                            .increment(1);
                        let who = session.identity.username.to_string();
                        self.refuse(
                            &who,
                            RejectReason::ForbiddenSubscription,
                            &f.path,
                            format!(
                                "may only subscribe below {}; connection closed",
                                session.allowed_sub_prefix
                            ),
                        );
                        return Err(Error::IncorrectPacketFormat);
                    }
                }
                Ok(Packet::Subscribe(subscribe, props))
            }
            other => Ok(other),
        }
    }

    fn write(&self, packet: Packet, write: &mut bytes::BytesMut) -> Result<usize, Error> {
        self.inner.write(packet, write)
    }
}

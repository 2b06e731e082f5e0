//! The embedded rumqttd: router configuration (bounded memory, one uplink filter), the
//! guarded MQTT 3.1.1/5 servers on the engine's tokio runtime, and the local links.

use super::guard::{GuardShared, GuardedProtocol, INTERNAL_PREFIX};
use crate::config::MqttConfig;
use crate::sink::acks::AckPublisher;
use rumqttd::local::{LinkBuilder, LinkRx, LinkTx};
use rumqttd::protocol::{v4::V4, v5::V5};
use rumqttd::{
    ConnectionSettings, LinkType, Router, RouterConfig, SegmentConfig, Server, ServerSettings,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Errors building the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A local link could not be created or subscribed.
    #[error("rumqttd local link {name}: {detail}")]
    Link {
        /// Link name.
        name: &'static str,
        /// rumqttd's error.
        detail: String,
    },
    /// A listener address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Filter of every rewritten uplink.
pub fn uplink_filter() -> String {
    format!("{INTERNAL_PREFIX}#")
}

/// Filters the ack link publishes to; pre-created so that an ack to a gateway that is not
/// subscribed right now never hits rumqttd's "no matching filter" disconnect.
const ACK_FILTERS: [&str; 2] = ["fw/v1/gw/+/ack", "fw/v1/gw/+/ack/json"];

/// The rumqttd router configuration derived from `[mqtt]`.
pub fn router_config(cfg: &MqttConfig) -> RouterConfig {
    let mut custom = HashMap::new();
    custom.insert(
        uplink_filter(),
        SegmentConfig {
            max_segment_size: cfg.uplink_segment_bytes,
            max_segment_count: cfg.uplink_segment_count,
        },
    );
    for f in ACK_FILTERS {
        // Nobody reads these catch-all copies; keep them minimal.
        custom.insert(
            f.to_string(),
            SegmentConfig {
                max_segment_size: 16 * 1024,
                max_segment_count: 1,
            },
        );
    }
    let mut initialized = vec![uplink_filter()];
    initialized.extend(ACK_FILTERS.iter().map(|s| s.to_string()));
    RouterConfig {
        max_connections: cfg.max_connections + 8,
        max_outgoing_packet_count: 200,
        // Per-gateway ack filters: each holds at most 2 × ack_segment_bytes of recent acks.
        max_segment_size: cfg.ack_segment_bytes,
        max_segment_count: 2,
        custom_segment: Some(custom),
        initialized_filters: Some(initialized),
        shared_subscriptions_strategy: Default::default(),
    }
}

/// The engine's links into the running broker.
pub struct BrokerLinks {
    /// Receives every guarded uplink (`fwi/#`).
    pub uplink_rx: LinkRx,
    /// Kept so the uplink link stays registered.
    pub uplink_tx: LinkTx,
    /// Publishes acks.
    pub acks: LinkAckPublisher,
    /// The ack link's receive side; never read (it has no subscriptions) but kept alive.
    pub acks_rx: LinkRx,
}

/// [`AckPublisher`] over a rumqttd local link.
pub struct LinkAckPublisher {
    tx: LinkTx,
}

impl AckPublisher for LinkAckPublisher {
    fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), String> {
        self.tx
            .publish(topic, payload)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn server_settings(name: &str, addr: SocketAddr, cfg: &MqttConfig) -> ServerSettings {
    ServerSettings {
        name: name.to_string(),
        listen: addr,
        tls: cfg.tls.as_ref().map(|t| rumqttd::TlsConfig::Rustls {
            capath: t.ca_path.as_ref().map(|p| p.display().to_string()),
            certpath: t.cert_path.display().to_string(),
            keypath: t.key_path.display().to_string(),
        }),
        // Accept as fast as the kernel hands us sockets; gateways jitter their reconnects.
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: cfg.connect_timeout.as_millis().min(65_535) as u16,
            max_payload_size: cfg.max_packet_bytes,
            max_inflight_count: 100,
            // Authentication is done by the guard, which also records failures.
            auth: None,
            external_auth: None,
            dynamic_filters: false,
        },
    }
}

/// Spawns the router, creates the local links, binds the listeners (failing fast on a bad
/// address) and spawns the guarded servers on `rt`.
pub fn start(
    cfg: &MqttConfig,
    shared: Arc<GuardShared>,
    rt: &tokio::runtime::Handle,
) -> Result<BrokerLinks, BrokerError> {
    let router_tx = Router::new(0, router_config(cfg)).spawn();
    let link_err = |name| {
        move |e: rumqttd::local::LinkError| BrokerError::Link {
            name,
            detail: e.to_string(),
        }
    };
    let (mut uplink_tx, uplink_rx, _) = LinkBuilder::new("firewatch-ingest", router_tx.clone())
        .clean_session(true)
        .build()
        .map_err(link_err("firewatch-ingest"))?;
    uplink_tx
        .subscribe(uplink_filter())
        .map_err(link_err("firewatch-ingest"))?;
    let (acks_tx, acks_rx, _) = LinkBuilder::new("firewatch-acks", router_tx.clone())
        .clean_session(true)
        .build()
        .map_err(link_err("firewatch-acks"))?;

    let mut listeners = Vec::new();
    if let Some(addr) = cfg.listen_v4 {
        listeners.push(("mqtt-v4", addr, false));
    }
    if let Some(addr) = cfg.listen_v5 {
        listeners.push(("mqtt-v5", addr, true));
    }
    for (name, addr, v5) in listeners {
        // Probe the address so a bad listen address fails start-up with a clear error;
        // rumqttd binds it again inside `Server::start`.
        std::net::TcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, source })?;
        let settings = server_settings(name, addr, cfg);
        if v5 {
            let mut server = Server::new(
                settings,
                router_tx.clone(),
                GuardedProtocol::new(V5, shared.clone()),
            );
            rt.spawn(async move {
                if let Err(e) = server.start(LinkType::Remote).await {
                    tracing::error!(listener = name, error = %e, "mqtt listener stopped");
                }
            });
        } else {
            let mut server = Server::new(
                settings,
                router_tx.clone(),
                GuardedProtocol::new(V4, shared.clone()),
            );
            rt.spawn(async move {
                if let Err(e) = server.start(LinkType::Remote).await {
                    tracing::error!(listener = name, error = %e, "mqtt listener stopped");
                }
            });
        }
    }
    Ok(BrokerLinks {
        uplink_rx,
        uplink_tx,
        acks: LinkAckPublisher { tx: acks_tx },
        acks_rx,
    })
}

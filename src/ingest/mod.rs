//! Ingest: the embedded rumqttd broker, the local link that consumes every uplink, topic
//! and registry ownership checks, decoding, and hand-off to the pipeline router.
//!
//! Topics arrive rewritten by [`guard`] as `fwi/{authenticated user}/{topic}`.

pub mod broker;
pub mod decode;
pub mod guard;

use crate::pipeline::incident::{house_of_incident, Command};
use crate::pipeline::{BatchCtx, Router, ShardMsg};
use crate::registry::Registry;
use crate::sink::{BatchAck, DeadLetter, DeadLetterTx, OutRecord, SinkMsg, Topic};
use crate::telemetry::names;
use bytes::Bytes;
use firewatch_proto::{
    EventKind, EventRef, RejectReason, RejectedEvent, TroubleRecord, UplinkBatch,
};
use std::sync::Arc;
use std::time::Instant;

/// Payload format of an uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `…/up`.
    Protobuf,
    /// `…/up/json`.
    Json,
}

/// What an internal topic names.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// An uplink batch from the authenticated gateway.
    Uplink(Format),
    /// The gateway's status (LWT / retained online).
    Status,
    /// Not a topic this identity may publish on; the detail says why.
    Wrong(String),
    /// `fw/v1/station/{id}/cmd` (or `…/cmd/json`) from that station.
    StationCommand(u32, Format),
    /// Not an `fwi/` topic at all (never from a guarded connection).
    Foreign(&'a str),
}

/// Splits `fwi/{user}/{topic}` and classifies `topic` for `user`.
pub fn classify(internal: &str) -> (&str, &str, Route<'_>) {
    let Some(rest) = internal.strip_prefix(guard::INTERNAL_PREFIX) else {
        return ("", internal, Route::Foreign(internal));
    };
    let (user, topic) = rest.split_once('/').unwrap_or((rest, ""));
    let route = if let Some(gw_rest) = topic.strip_prefix("fw/v1/gw/") {
        let (gw, tail) = gw_rest.split_once('/').unwrap_or((gw_rest, ""));
        if gw != user {
            Route::Wrong(format!(
                "{user} may not publish on the topics of gateway {gw}"
            ))
        } else {
            match tail {
                "up" => Route::Uplink(Format::Protobuf),
                "up/json" => Route::Uplink(Format::Json),
                "status" => Route::Status,
                _ => Route::Wrong(format!("unknown gateway topic suffix {tail:?}")),
            }
        }
    } else if let Some(st_rest) = topic.strip_prefix("fw/v1/station/") {
        match (st_rest.split_once('/'), crate::auth::station_id_of(user)) {
            (Some((id, "cmd")), Some(own)) if id.parse() == Ok(own) => {
                Route::StationCommand(own, Format::Protobuf)
            }
            (Some((id, "cmd/json")), Some(own)) if id.parse() == Ok(own) => {
                Route::StationCommand(own, Format::Json)
            }
            _ => Route::Wrong(format!("{user} may not publish on {topic}")),
        }
    } else {
        Route::Wrong(format!("topic {topic:?} is outside fw/v1/"))
    };
    (user, topic, route)
}

/// Counters touched for every uplink, registered once.
struct HotCounters {
    received_bytes: metrics::Counter,
    /// [protobuf, json].
    batches: [metrics::Counter; 2],
}

/// The ingest thread's state: everything between a raw publish and the shard lanes.
pub struct Ingest {
    registry: Arc<Registry>,
    router: Router,
    deadletter: DeadLetterTx,
    sink: crossbeam_channel::Sender<SinkMsg>,
    max_payload: usize,
    max_events: usize,
    last_offset: Option<u64>,
    kind_counts: [u64; 14],
    kind_counters: Vec<metrics::Counter>,
    house_station: rustc_hash::FxHashMap<u32, u32>,
    hot: HotCounters,
    gateway_down_since: rustc_hash::FxHashMap<u32, i64>,
}

impl Ingest {
    /// Ingest over a router and the sink channel.
    pub fn new(
        registry: Arc<Registry>,
        router: Router,
        deadletter: DeadLetterTx,
        sink: crossbeam_channel::Sender<SinkMsg>,
        max_payload: usize,
        max_events: usize,
    ) -> Self {
        let kind_counters = (0..14)
            .map(|k| {
                let name = EventKind::try_from(k)
                    .unwrap_or(EventKind::Unspecified)
                    .wire_name();
                metrics::counter!(names::INGEST_EVENTS_TOTAL, "kind" => name)
            })
            .collect();
        Ingest {
            router,
            deadletter,
            sink,
            max_payload,
            max_events,
            last_offset: None,
            kind_counts: [0; 14],
            kind_counters,
            house_station: (0..registry.len() as u32)
                .map(|i| (registry.info(i).house, registry.info(i).station))
                .collect(),
            gateway_down_since: Default::default(),
            hot: HotCounters {
                received_bytes: metrics::counter!(names::INGEST_RECEIVED_BYTES_TOTAL),
                batches: [
                    metrics::counter!(names::INGEST_BATCHES_TOTAL, "format" => "protobuf"),
                    metrics::counter!(names::INGEST_BATCHES_TOTAL, "format" => "json"),
                ],
            },
            registry,
        }
    }

    /// A gateway's last connection closed (`up = false`) or its first one opened: one
    /// aggregated trouble for the outage and its restore, and the shards mark its points
    /// unreachable / restored without a record per point.
    pub fn on_presence(&mut self, who: &str, up: bool, now_ms: i64) {
        let Some(g) = self.registry.gateway_idx(who) else {
            return;
        };
        let points = self.registry.gateway_points(g);
        let Some(&first) = points.first() else { return };
        self.router.gateway_presence(points, up);
        let info = *self.registry.info(first);
        let since = if up {
            // A first connection after start is not a restore.
            let Some(since) = self.gateway_down_since.remove(&g) else {
                return;
            };
            since
        } else {
            self.gateway_down_since.insert(g, now_ms);
            now_ms
        };
        let rec = TroubleRecord {
            kind: "gateway_offline".into(),
            active: !up,
            station_id: info.station,
            point_id: 0,
            gateway_id: who.to_string(),
            points_affected: points.len() as u32,
            location: Some(crate::pipeline::shard::location(&info)),
            at_ms: now_ms,
            since_ms: since,
        };
        let rec = OutRecord::new(Topic::Troubles, info.station, &rec, now_ms);
        let _ = self.sink.send(SinkMsg {
            records: vec![rec],
            acks: vec![],
            shard: None,
        });
    }

    fn station_command(
        &mut self,
        user: &str,
        topic: &str,
        station: u32,
        format: Format,
        payload: Bytes,
    ) {
        let decoded = match format {
            Format::Protobuf => decode::decode_command_protobuf(&payload),
            Format::Json => decode::decode_command_json(&payload),
        };
        let cmd = match decoded {
            Ok(c) => c,
            Err(e) => {
                return self.reject(
                    user,
                    topic,
                    RejectReason::InvalidCommand,
                    e.to_string(),
                    &payload,
                )
            }
        };
        let command = match Command::from_kind(cmd.kind) {
            Some(c) => c,
            None => {
                let detail = format!("command kind {} is not valid", cmd.kind);
                return self.reject(user, topic, RejectReason::InvalidCommand, detail, &payload);
            }
        };
        if cmd.station_id != 0 && cmd.station_id != station {
            let detail = format!(
                "command names station {} but station {station} sent it",
                cmd.station_id
            );
            return self.reject(user, topic, RejectReason::InvalidCommand, detail, &payload);
        }
        let Some(house) = house_of_incident(&cmd.incident_id) else {
            let detail = format!("{:?} is not an incident id", cmd.incident_id);
            return self.reject(user, topic, RejectReason::UnknownIncident, detail, &payload);
        };
        match self.house_station.get(&house) {
            None => {
                let detail = format!("house {house} is not in the registry");
                self.reject(user, topic, RejectReason::UnknownIncident, detail, &payload)
            }
            Some(&owner) if owner != station => {
                let detail = format!("incident {} belongs to station {owner}", cmd.incident_id);
                self.reject(user, topic, RejectReason::ForeignIncident, detail, &payload)
            }
            Some(_) => {
                let shard = crate::pipeline::shard_of_house(house, self.router.shards());
                metrics::counter!(names::INGEST_COMMANDS_TOTAL).increment(1);
                self.router.send_priority(
                    shard,
                    ShardMsg::Command {
                        house,
                        incident_id: cmd.incident_id,
                        command,
                        operator: cmd.operator,
                        station,
                    },
                );
            }
        }
    }

    /// Called when no uplink arrived for a while: re-offers coalesced heartbeats.
    pub fn idle(&mut self) {
        self.router.flush_pending();
    }

    /// Notes the broker offset of a forwarded message; a gap means rumqttd dropped uplinks
    /// (its per-filter log wrapped before we read it) — loud, counted, never silent.
    pub fn observe_offset(&mut self, offset: u64) {
        if let Some(last) = self.last_offset {
            if offset > last + 1 {
                let lost = offset - last - 1;
                metrics::counter!(names::INGEST_LOST_MESSAGES_TOTAL).increment(lost);
                tracing::error!(
                    lost,
                    "broker dropped uplink messages before ingest read them (cursor jump); raise mqtt.uplink_segment_bytes or add shards"
                );
            }
        }
        self.last_offset = Some(offset);
    }

    fn reject(&self, user: &str, topic: &str, reason: RejectReason, detail: String, raw: &Bytes) {
        metrics::counter!(names::INGEST_REJECTED_TOTAL, "reason" => reason.wire_name())
            .increment(1);
        // Bytes clones share the buffer; the record keeps at most deadletter_raw_bytes.
        self.deadletter.send(DeadLetter {
            gateway_id: user.to_string(),
            topic: topic.to_string(),
            reason,
            detail,
            raw: raw.clone(),
            point_id: 0,
            device_seq: 0,
        });
    }

    /// Sends a REJECTED ack for a whole batch, after its dead letter (same channel, so the
    /// record is durable first).
    fn reject_ack(
        &self,
        user: &str,
        batch_seq: u64,
        format: Format,
        reason: RejectReason,
        detail: String,
    ) {
        let mut a = BatchAck::new(user.into(), batch_seq, vec![], vec![], Instant::now(), 1);
        a.rejection = Some((reason, detail));
        a.json = format == Format::Json;
        let _ = self.sink.send(SinkMsg {
            records: vec![],
            acks: vec![Arc::new(a)],
            shard: None,
        });
    }

    /// Handles one forwarded publish.
    pub fn handle(
        &mut self,
        internal_topic: &[u8],
        payload: Bytes,
        received: Instant,
        now_ms: i64,
    ) {
        self.hot.received_bytes.increment(payload.len() as u64);
        let Ok(internal) = std::str::from_utf8(internal_topic) else {
            self.reject(
                "",
                "",
                RejectReason::WrongTopic,
                "topic is not UTF-8".into(),
                &payload,
            );
            return;
        };
        let (user, topic, route) = classify(internal);
        match route {
            Route::Uplink(format) => self.uplink(user, topic, format, payload, received, now_ms),
            Route::Status => {
                let status = match payload.as_ref() {
                    b"online" => "online",
                    b"offline" => "offline",
                    _ => "other",
                };
                metrics::counter!(names::INGEST_GATEWAY_STATUS_TOTAL, "status" => status)
                    .increment(1);
            }
            Route::StationCommand(station, format) => {
                self.station_command(user, topic, station, format, payload)
            }
            Route::Wrong(detail) => {
                self.reject(user, topic, RejectReason::WrongTopic, detail, &payload)
            }
            Route::Foreign(t) => self.reject(
                "",
                t,
                RejectReason::WrongTopic,
                "unguarded topic".into(),
                &payload,
            ),
        }
    }

    fn uplink(
        &mut self,
        user: &str,
        topic: &str,
        format: Format,
        payload: Bytes,
        received: Instant,
        now_ms: i64,
    ) {
        self.hot.batches[usize::from(format == Format::Json)].increment(1);
        if payload.len() > self.max_payload {
            let detail = format!(
                "payload of {} bytes exceeds {}",
                payload.len(),
                self.max_payload
            );
            self.reject(
                user,
                topic,
                RejectReason::Oversize,
                detail.clone(),
                &payload,
            );
            self.reject_ack(user, 0, format, RejectReason::Oversize, detail);
            return;
        }
        let decoded = match format {
            Format::Protobuf => decode::decode_protobuf(&payload),
            Format::Json => decode::decode_json(&payload),
        };
        let batch = match decoded {
            Ok(b) => b,
            Err(e) => {
                self.reject(
                    user,
                    topic,
                    RejectReason::DecodeError,
                    e.to_string(),
                    &payload,
                );
                self.reject_ack(user, 0, format, RejectReason::DecodeError, e.to_string());
                return;
            }
        };
        if !batch.gateway_id.is_empty() && batch.gateway_id != user {
            let detail = format!(
                "batch names gateway {:?} but {user} sent it",
                batch.gateway_id
            );
            self.reject(
                user,
                topic,
                RejectReason::GatewayMismatch,
                detail.clone(),
                &payload,
            );
            self.reject_ack(
                user,
                batch.batch_seq,
                format,
                RejectReason::GatewayMismatch,
                detail,
            );
            return;
        }
        if batch.events.len() > self.max_events {
            let detail = format!("{} events exceed {}", batch.events.len(), self.max_events);
            self.reject(
                user,
                topic,
                RejectReason::TooManyEvents,
                detail.clone(),
                &payload,
            );
            self.reject_ack(
                user,
                batch.batch_seq,
                format,
                RejectReason::TooManyEvents,
                detail,
            );
            return;
        }
        self.accept(user, topic, format, batch, received, now_ms);
    }

    fn accept(
        &mut self,
        user: &str,
        topic: &str,
        format: Format,
        batch: UplinkBatch,
        received: Instant,
        now_ms: i64,
    ) {
        let gw = self.registry.gateway_idx(user);
        let mut accepted = Vec::with_capacity(batch.events.len());
        let mut durable = Vec::new();
        let mut rejected = Vec::new();
        for ev in batch.events {
            let kind = EventKind::try_from(ev.kind).unwrap_or(EventKind::Unspecified);
            let verdict = if kind == EventKind::Unspecified {
                Err((
                    RejectReason::InvalidEvent,
                    format!("event kind {} is not valid", ev.kind),
                ))
            } else {
                match self.registry.lookup(ev.point_id) {
                    None => Err((
                        RejectReason::UnknownPoint,
                        "point is not in the registry".into(),
                    )),
                    Some((idx, info)) if Some(info.gateway) == gw => Ok(idx),
                    Some((_, info)) => Err((
                        RejectReason::ForeignPoint,
                        format!(
                            "point belongs to gateway {}",
                            self.registry.gateway_id(info.gateway)
                        ),
                    )),
                }
            };
            match verdict {
                Ok(idx) => {
                    self.kind_counts[kind as usize] += 1;
                    if kind.is_alarm() {
                        durable.push(EventRef {
                            point_id: ev.point_id,
                            device_seq: ev.device_seq,
                        });
                    }
                    accepted.push((idx, ev));
                }
                Err((reason, detail)) => {
                    metrics::counter!(names::INGEST_REJECTED_TOTAL, "reason" => reason.wire_name())
                        .increment(1);
                    rejected.push(RejectedEvent {
                        point_id: ev.point_id,
                        device_seq: ev.device_seq,
                        reason: reason as i32,
                    });
                    use prost::Message;
                    self.deadletter.send(DeadLetter {
                        gateway_id: user.to_string(),
                        topic: topic.to_string(),
                        reason,
                        detail,
                        raw: Bytes::from(ev.encode_to_vec()),
                        point_id: ev.point_id,
                        device_seq: ev.device_seq,
                    });
                }
            }
        }
        for (k, n) in self.kind_counts.iter_mut().enumerate() {
            if *n > 0 {
                self.kind_counters[k].increment(*n);
                *n = 0;
            }
        }
        let gateway_id: Arc<str> = Arc::from(user);
        let ctx = BatchCtx {
            gateway_id: gateway_id.clone(),
            batch_seq: batch.batch_seq,
            received_ms: now_ms,
        };
        let json = format == Format::Json;
        let pending = self.router.route(accepted.into_iter(), &ctx, |parts| {
            let mut a = BatchAck::new(
                gateway_id,
                batch.batch_seq,
                durable,
                rejected,
                received,
                parts,
            );
            a.json = json;
            a
        });
        if let Some(ack) = pending {
            // Nothing for the shards: ack after the dead letters ahead of it are durable.
            let _ = self.sink.send(SinkMsg {
                records: vec![],
                acks: vec![ack],
                shard: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_topics() {
        assert_eq!(
            classify("fwi/gw-1/fw/v1/gw/gw-1/up").2,
            Route::Uplink(Format::Protobuf)
        );
        assert_eq!(
            classify("fwi/gw-1/fw/v1/gw/gw-1/up/json").2,
            Route::Uplink(Format::Json)
        );
        assert_eq!(classify("fwi/gw-1/fw/v1/gw/gw-1/status").2, Route::Status);
        assert!(matches!(
            classify("fwi/gw-1/fw/v1/gw/gw-2/up").2,
            Route::Wrong(_)
        ));
        assert!(matches!(
            classify("fwi/gw-1/fw/v1/gw/gw-1/down").2,
            Route::Wrong(_)
        ));
        assert!(matches!(classify("fwi/gw-1/other").2, Route::Wrong(_)));
        assert_eq!(
            classify("fwi/station-3/fw/v1/station/3/cmd").2,
            Route::StationCommand(3, Format::Protobuf)
        );
        assert_eq!(
            classify("fwi/station-3/fw/v1/station/3/cmd/json").2,
            Route::StationCommand(3, Format::Json)
        );
        assert!(matches!(
            classify("fwi/station-3/fw/v1/station/4/cmd").2,
            Route::Wrong(_)
        ));
        assert!(matches!(
            classify("fwi/gw-1/fw/v1/station/4/cmd").2,
            Route::Wrong(_)
        ));
        assert!(matches!(classify("x/y").2, Route::Foreign(_)));
        let (user, topic, _) = classify("fwi/gw-1/fw/v1/gw/gw-1/up");
        assert_eq!((user, topic), ("gw-1", "fw/v1/gw/gw-1/up"));
    }
}

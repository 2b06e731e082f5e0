//! The `fw.station-commands` consumer: station consoles that speak Kafka send the same
//! protobuf `StationCommand` as on `fw/v1/station/{id}/cmd`, with the same checks.
//!
//! Kafka carries no station identity, so a command must name its `station_id` (and, if the
//! record has a key, the key must be that id in decimal); the incident's house must belong
//! to that station. A valid command goes to its house's shard by the alarm lane, followed
//! by a *barrier*: an empty batch whose pending ack signals this thread instead of a
//! gateway. The shard handles its lane in order and the sink releases that ack only after
//! the records produced before it in that shard's stream are durable (the command's
//! incident records are synced in the local state log, so delivered to Kafka or replayed
//! from the spool). Only then is the offset committed: **a committed command has been
//! applied and its records are durable.** A crash between applying and committing
//! delivers the command again; the second application is rejected as not open, or is a
//! no-op repeat, and lands on `fw.deadletter` — at-least-once, never lost.
//!
//! Invalid or foreign commands are counted, sent to `fw.deadletter` with a reason, and
//! committed.

use super::{client_config, COMMANDS_TOPIC};
use crate::config::KafkaConfig;
use crate::pipeline::incident::{house_of_incident, Command};
use crate::pipeline::{shard_of_house, BatchCtx, EventBatch, ShardMsg};
use crate::registry::Registry;
use crate::sink::{BatchAck, DeadLetter, DeadLetterTx};
use crate::telemetry::names;
use bytes::Bytes;
use crossbeam_channel::Sender;
use firewatch_proto::{RejectReason, StationCommand};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A command that passed every check.
#[derive(Debug, PartialEq)]
pub struct Valid {
    /// The incident's house.
    pub house: u32,
    /// The commanding station.
    pub station: u32,
    /// Incident id.
    pub incident_id: String,
    /// What to do.
    pub command: Command,
    /// Who.
    pub operator: String,
}

/// Checks a command record (`key` optional); the error names the reason and why.
pub fn validate(
    key: Option<&[u8]>,
    payload: &[u8],
    house_station: &HashMap<u32, u32>,
) -> Result<Valid, (u32, RejectReason, String)> {
    let cmd = StationCommand::decode(payload)
        .map_err(|e| (0, RejectReason::InvalidCommand, format!("protobuf: {e}")))?;
    let station = cmd.station_id;
    let bad = |reason, detail: String| (station, reason, detail);
    if station == 0 {
        return Err(bad(
            RejectReason::InvalidCommand,
            "station_id is required on kafka".into(),
        ));
    }
    if let Some(k) = key.filter(|k| !k.is_empty()) {
        if k != station.to_string().as_bytes() {
            return Err(bad(
                RejectReason::InvalidCommand,
                format!(
                    "record key {:?} is not station {station}",
                    String::from_utf8_lossy(k)
                ),
            ));
        }
    }
    let command = match Command::from_kind(cmd.kind) {
        Some(c) => c,
        None => {
            return Err(bad(
                RejectReason::InvalidCommand,
                format!("command kind {} is not valid", cmd.kind),
            ))
        }
    };
    let Some(house) = house_of_incident(&cmd.incident_id) else {
        return Err(bad(
            RejectReason::UnknownIncident,
            format!("{:?} is not an incident id", cmd.incident_id),
        ));
    };
    match house_station.get(&house) {
        None => Err(bad(
            RejectReason::UnknownIncident,
            format!("house {house} is not in the registry"),
        )),
        Some(&owner) if owner != station => Err(bad(
            RejectReason::ForeignIncident,
            format!("incident {} belongs to station {owner}", cmd.incident_id),
        )),
        Some(_) => Ok(Valid {
            house,
            station,
            incident_id: cmd.incident_id,
            command,
            operator: cmd.operator,
        }),
    }
}

/// Errors starting the consumer.
#[derive(Debug, thiserror::Error)]
pub enum CommandsError {
    /// The consumer could not be created or subscribed.
    #[error("kafka command consumer: {0}")]
    Consumer(String),
}

/// The consumer thread's state.
pub struct CommandConsumer {
    consumer: BaseConsumer,
    lanes: Vec<Sender<ShardMsg>>,
    house_station: HashMap<u32, u32>,
    deadletter: DeadLetterTx,
    stop: Arc<AtomicBool>,
}

impl CommandConsumer {
    /// Subscribes to `{prefix}fw.station-commands` in `kafka.commands_group`.
    pub fn new(
        cfg: &KafkaConfig,
        registry: &Registry,
        lanes: Vec<Sender<ShardMsg>>,
        deadletter: DeadLetterTx,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, CommandsError> {
        let consumer: BaseConsumer = client_config(cfg)
            .set("group.id", &cfg.commands_group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(|e| CommandsError::Consumer(e.to_string()))?;
        let topic = format!("{}{COMMANDS_TOPIC}", cfg.topic_prefix);
        consumer
            .subscribe(&[&topic])
            .map_err(|e| CommandsError::Consumer(e.to_string()))?;
        let house_station = (0..registry.len() as u32)
            .map(|i| (registry.info(i).house, registry.info(i).station))
            .collect();
        Ok(CommandConsumer {
            consumer,
            lanes,
            house_station,
            deadletter,
            stop,
        })
    }

    /// Runs until stopped: one command at a time, committed once applied and durable.
    pub fn run(self) {
        while !self.stop.load(Ordering::SeqCst) {
            let m = match self.consumer.poll(Duration::from_millis(100)) {
                None => continue,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "kafka command consumer error");
                    continue;
                }
                Some(Ok(m)) => m,
            };
            let (topic, partition, offset) = (m.topic().to_string(), m.partition(), m.offset());
            let payload = m.payload().unwrap_or_default();
            let applied = match validate(m.key(), payload, &self.house_station) {
                Ok(v) => self.apply(v),
                Err((station, reason, detail)) => {
                    metrics::counter!(names::INGEST_KAFKA_COMMANDS_TOTAL, "result" => "rejected")
                        .increment(1);
                    self.deadletter.send(DeadLetter {
                        gateway_id: format!("station-{station}"),
                        topic: topic.clone(),
                        reason,
                        detail,
                        raw: Bytes::copy_from_slice(payload),
                        point_id: 0,
                        device_seq: 0,
                    });
                    true
                }
            };
            if !applied {
                // Stopping before the command was durable: leave it uncommitted.
                break;
            }
            let mut tpl = TopicPartitionList::new();
            if tpl
                .add_partition_offset(&topic, partition, Offset::Offset(offset + 1))
                .is_ok()
            {
                if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
                    tracing::warn!(error = %e, "kafka command offset commit failed; the command may be delivered again");
                }
            }
        }
        tracing::info!("kafka command consumer stopped");
    }

    /// Sends the command and its barrier to the shard; true once the barrier is durable.
    fn apply(&self, v: Valid) -> bool {
        let shard = shard_of_house(v.house, self.lanes.len());
        let Some(lane) = self.lanes.get(shard) else {
            return false;
        };
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut barrier = BatchAck::new(Arc::from(""), 0, vec![], vec![], Instant::now(), 1);
        barrier.notify = Some(tx);
        let cmd = ShardMsg::Command {
            house: v.house,
            incident_id: v.incident_id,
            command: v.command,
            operator: v.operator,
            station: v.station,
        };
        let barrier = ShardMsg::Events(EventBatch {
            events: vec![],
            ctx: BatchCtx {
                gateway_id: Arc::from(""),
                batch_seq: 0,
                received_ms: crate::clock::unix_ms(),
            },
            ack: Some(Arc::new(barrier)),
        });
        if lane.send(cmd).is_err() || lane.send(barrier).is_err() {
            return false;
        }
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => {
                    metrics::counter!(names::INGEST_KAFKA_COMMANDS_TOTAL, "result" => "applied")
                        .increment(1);
                    return true;
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    // No poll meanwhile (it would hand out the next command): a wait past
                    // max.poll.interval.ms (5 min; only with the spool full) rebalances
                    // and the command comes again, at-least-once.
                    if self.stop.load(Ordering::SeqCst) {
                        return false;
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firewatch_proto::CommandKind;

    fn cmd(station: u32, incident: &str, kind: CommandKind) -> Vec<u8> {
        StationCommand {
            station_id: station,
            incident_id: incident.into(),
            kind: kind as i32,
            operator: "op".into(),
            issued_at_ms: 1,
            note: String::new(),
        }
        .encode_to_vec()
    }

    #[test]
    fn validation_matches_the_mqtt_rules() {
        let hs: HashMap<u32, u32> = [(10, 1), (11, 2)].into_iter().collect();
        let ok = validate(Some(b"1"), &cmd(1, "inc-10-5", CommandKind::Ack), &hs).unwrap();
        assert_eq!((ok.house, ok.station, ok.command), (10, 1, Command::Ack));
        let reason = |k: Option<&[u8]>, p: Vec<u8>| validate(k, &p, &hs).unwrap_err().1;
        assert_eq!(reason(None, vec![0xff, 0xff]), RejectReason::InvalidCommand);
        assert_eq!(
            reason(None, cmd(0, "inc-10-5", CommandKind::Ack)),
            RejectReason::InvalidCommand
        );
        assert_eq!(
            reason(Some(b"2"), cmd(1, "inc-10-5", CommandKind::Ack)),
            RejectReason::InvalidCommand
        );
        assert_eq!(
            reason(None, cmd(1, "inc-10-5", CommandKind::Unspecified)),
            RejectReason::InvalidCommand
        );
        assert_eq!(
            reason(None, cmd(1, "nope", CommandKind::Ack)),
            RejectReason::UnknownIncident
        );
        assert_eq!(
            reason(None, cmd(1, "inc-99-5", CommandKind::Ack)),
            RejectReason::UnknownIncident
        );
        assert_eq!(
            reason(None, cmd(1, "inc-11-5", CommandKind::Resolve)),
            RejectReason::ForeignIncident
        );
    }
}

//! Uplink payload decoding: protobuf (`…/up`) and JSON (`…/up/json`) into `UplinkBatch`.
//! Pure and total: any byte string gives a batch or a [`DecodeError`] (fuzzed in `fuzz/`).

use firewatch_proto::{CommandKind, EventKind, PointEvent, StationCommand, UplinkBatch};
use prost::Message;
use serde::Deserialize;

/// Why a payload is not a batch.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    /// Not valid protobuf for `UplinkBatch`.
    #[error("invalid protobuf UplinkBatch: {0}")]
    Protobuf(String),
    /// Not valid JSON for the batch schema.
    #[error("invalid JSON batch: {0}")]
    Json(String),
    /// An event kind name that does not exist.
    #[error("event {index}: unknown kind {kind:?}")]
    UnknownKind {
        /// Position in `events`.
        index: usize,
        /// The name given.
        kind: String,
    },
}

/// Decodes a protobuf batch.
pub fn decode_protobuf(payload: &[u8]) -> Result<UplinkBatch, DecodeError> {
    UplinkBatch::decode(payload).map_err(|e| DecodeError::Protobuf(e.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonBatch {
    #[serde(default)]
    gateway_id: String,
    batch_seq: u64,
    #[serde(default)]
    sent_at_ms: i64,
    events: Vec<JsonEvent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEvent {
    point_id: u64,
    kind: String,
    #[serde(default)]
    device_seq: u32,
    #[serde(default)]
    device_time_ms: i64,
    #[serde(default)]
    value: f32,
    #[serde(default)]
    battery_pct: u32,
    #[serde(default)]
    rssi_dbm: i32,
}

/// Decodes a JSON batch: the protobuf fields in snake_case, `kind` as a lowercase name.
pub fn decode_json(payload: &[u8]) -> Result<UplinkBatch, DecodeError> {
    let b: JsonBatch =
        serde_json::from_slice(payload).map_err(|e| DecodeError::Json(e.to_string()))?;
    let mut events = Vec::with_capacity(b.events.len());
    for (index, e) in b.events.into_iter().enumerate() {
        let kind = EventKind::from_wire_name(&e.kind).ok_or(DecodeError::UnknownKind {
            index,
            kind: e.kind,
        })?;
        events.push(PointEvent {
            point_id: e.point_id,
            kind: kind as i32,
            device_seq: e.device_seq,
            device_time_ms: e.device_time_ms,
            value: e.value,
            battery_pct: e.battery_pct,
            rssi_dbm: e.rssi_dbm,
        });
    }
    Ok(UplinkBatch {
        gateway_id: b.gateway_id,
        batch_seq: b.batch_seq,
        sent_at_ms: b.sent_at_ms,
        events,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonCommand {
    #[serde(default)]
    station_id: u32,
    incident_id: String,
    kind: String,
    #[serde(default)]
    operator: String,
    #[serde(default)]
    issued_at_ms: i64,
    #[serde(default)]
    note: String,
}

/// Decodes a protobuf `StationCommand`.
pub fn decode_command_protobuf(payload: &[u8]) -> Result<StationCommand, DecodeError> {
    StationCommand::decode(payload).map_err(|e| DecodeError::Protobuf(e.to_string()))
}

/// Decodes a JSON station command (`kind`: ack, on_scene, resolve, false_alarm).
pub fn decode_command_json(payload: &[u8]) -> Result<StationCommand, DecodeError> {
    let c: JsonCommand =
        serde_json::from_slice(payload).map_err(|e| DecodeError::Json(e.to_string()))?;
    let kind = CommandKind::from_str_name(&c.kind.to_ascii_uppercase())
        .filter(|k| *k != CommandKind::Unspecified)
        .ok_or(DecodeError::UnknownKind {
            index: 0,
            kind: c.kind,
        })?;
    Ok(StationCommand {
        station_id: c.station_id,
        incident_id: c.incident_id,
        kind: kind as i32,
        operator: c.operator,
        issued_at_ms: c.issued_at_ms,
        note: c.note,
    })
}

/// The JSON form of a batch (what `decode_json` reads), for tools and tests.
pub fn encode_json(b: &UplinkBatch) -> String {
    serde_json::to_string(b).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn json_example_decodes() {
        let j = br#"{"gateway_id":"gw-000001","batch_seq":3,"events":[
            {"point_id":17,"kind":"smoke_alarm","device_seq":5,"value":0.3},
            {"point_id":18,"kind":"heartbeat","device_seq":1,"battery_pct":88}]}"#;
        let b = decode_json(j).unwrap();
        assert_eq!(b.batch_seq, 3);
        assert_eq!(b.events[0].kind, EventKind::SmokeAlarm as i32);
        assert_eq!(b.events[1].battery_pct, 88);
    }

    #[test]
    fn json_errors_are_specific() {
        let e = decode_json(br#"{"batch_seq":1,"events":[{"point_id":1,"kind":"fire"}]}"#);
        assert_eq!(
            e,
            Err(DecodeError::UnknownKind {
                index: 0,
                kind: "fire".into()
            })
        );
        let e = decode_json(br#"{"batch_seq":1,"events":[],"extra":1}"#).unwrap_err();
        assert!(e.to_string().contains("extra"), "{e}");
        assert!(decode_json(b"not json").is_err());
        assert!(decode_json(br#"{"events":[]}"#)
            .unwrap_err()
            .to_string()
            .contains("batch_seq"));
    }

    #[test]
    fn json_and_protobuf_agree() {
        let b = UplinkBatch {
            gateway_id: "g".into(),
            batch_seq: 9,
            sent_at_ms: 5,
            events: vec![PointEvent {
                point_id: 3,
                kind: EventKind::HeatAlarm as i32,
                device_seq: 2,
                device_time_ms: 4,
                value: 61.5,
                battery_pct: 50,
                rssi_dbm: -80,
            }],
        };
        assert_eq!(decode_json(encode_json(&b).as_bytes()).unwrap(), b);
        assert_eq!(decode_protobuf(&b.encode_to_vec()).unwrap(), b);
    }

    #[test]
    fn json_command_decodes() {
        let c =
            decode_command_json(br#"{"incident_id":"inc-3-17","kind":"on_scene","operator":"li"}"#)
                .unwrap();
        assert_eq!(c.kind, CommandKind::OnScene as i32);
        assert!(decode_command_json(br#"{"incident_id":"x","kind":"dance"}"#).is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_protobuf(&bytes);
            let _ = decode_json(&bytes);
            let _ = decode_command_protobuf(&bytes);
            let _ = decode_command_json(&bytes);
        }
    }
}

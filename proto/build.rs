//! Compiles `firewatch/v1/*.proto` with protox (pure Rust, no system `protoc`) and prost.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "firewatch/v1/uplink.proto",
        "firewatch/v1/station.proto",
        "firewatch/v1/records.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let mut config = prost_build::Config::new();
    config.type_attribute(".", "#[derive(serde::Serialize)]");
    // Enum-typed fields are i32 in prost; print them by name in JSON (`firewatch tail`).
    for (field, helper) in [
        ("PointEvent.kind", "event_kind"),
        ("AlarmRecord.kind", "event_kind"),
        ("UplinkAck.status", "ack_status"),
        ("UplinkAck.reason", "reject_reason"),
        ("RejectedEvent.reason", "reject_reason"),
        ("StationCommand.kind", "command_kind"),
        ("Location.room_type", "room_type"),
        ("PointStatusRecord.state", "point_state"),
        ("DeadLetterRecord.reason", "reject_reason"),
        ("IncidentRecord.state", "incident_state"),
        ("IncidentRecord.first_kind", "event_kind"),
        ("IncidentRecord.escalation_level", "escalation_level"),
        ("Escalation.level", "escalation_level"),
        ("DispatchRecord.escalation_level", "escalation_level"),
        ("DispatchRecord.room_type", "room_type"),
        ("DispatchRecord.first_kind", "event_kind"),
    ] {
        config.field_attribute(
            format!(".firewatch.v1.{field}"),
            format!("#[serde(serialize_with = \"crate::json::{helper}\")]"),
        );
    }
    config.field_attribute(
        ".firewatch.v1.DeadLetterRecord.raw",
        "#[serde(serialize_with = \"crate::json::raw_bytes\")]",
    );
    for f in [
        "IncidentRecord.first_alarm_hash",
        "InsuranceTimelineRecord.prev_hash",
        "InsuranceTimelineRecord.hash",
    ] {
        config.field_attribute(
            format!(".firewatch.v1.{f}"),
            "#[serde(serialize_with = \"crate::json::hex_bytes\")]",
        );
    }
    config.compile_fds(fds)?;
    Ok(())
}

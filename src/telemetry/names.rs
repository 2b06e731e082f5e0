//! Every metric name of the engine, in one place: `firewatch_<subsystem>_<name>_<unit>`.
//! Labels are low-cardinality only (kind, reason, topic, shard, quantile) — never a point id.

/// Uplink batches received, by `format` (protobuf|json).
pub const INGEST_BATCHES_TOTAL: &str = "firewatch_ingest_batches_total";
/// Point events received (before dedup), by `kind`.
pub const INGEST_EVENTS_TOTAL: &str = "firewatch_ingest_events_total";
/// Uplink input rejected, by `reason` (also counted per dead letter below).
pub const INGEST_REJECTED_TOTAL: &str = "firewatch_ingest_rejected_total";
/// Failed MQTT logins.
pub const INGEST_AUTH_FAILURES_TOTAL: &str = "firewatch_ingest_auth_failures_total";
/// Identities (gateways, stations) with a live connection.
pub const INGEST_CONNECTED_CLIENTS: &str = "firewatch_ingest_connected_clients";
/// Uplink messages rumqttd dropped before the engine read them (cursor jumps).
pub const INGEST_LOST_MESSAGES_TOTAL: &str = "firewatch_ingest_lost_messages_total";
/// Uplink payload bytes received.
pub const INGEST_RECEIVED_BYTES_TOTAL: &str = "firewatch_ingest_received_bytes_total";
/// Station commands accepted for routing.
pub const INGEST_COMMANDS_TOTAL: &str = "firewatch_ingest_commands_total";
/// Station commands read from Kafka `fw.station-commands`, by `result` (applied|rejected).
pub const INGEST_KAFKA_COMMANDS_TOTAL: &str = "firewatch_ingest_kafka_commands_total";
/// Gateway status (LWT) messages, by `status`.
pub const INGEST_GATEWAY_STATUS_TOTAL: &str = "firewatch_ingest_gateway_status_total";

/// Events processed by shards, by `lane` (alarm|normal).
pub const PIPELINE_EVENTS_TOTAL: &str = "firewatch_pipeline_events_total";
/// Duplicate events discarded on purpose.
pub const PIPELINE_DUPLICATES_TOTAL: &str = "firewatch_pipeline_duplicates_total";
/// Events shed under overload, by `kind` (never alarms).
pub const PIPELINE_SHED_EVENTS_TOTAL: &str = "firewatch_pipeline_shed_events_total";
/// Batches waiting in a shard's lanes, by `shard` and `lane`.
pub const PIPELINE_QUEUE_DEPTH: &str = "firewatch_pipeline_queue_depth";
/// Points currently online, by `shard`.
pub const PIPELINE_ONLINE_POINTS: &str = "firewatch_pipeline_online_points";

/// Records made durable, by `topic`.
pub const SINK_RECORDS_TOTAL: &str = "firewatch_sink_records_total";
/// Bytes appended to the embedded log.
pub const SINK_WRITTEN_BYTES_TOTAL: &str = "firewatch_sink_written_bytes_total";
/// fsync calls of the embedded log.
pub const SINK_FSYNCS_TOTAL: &str = "firewatch_sink_fsyncs_total";
/// Sink write errors.
pub const SINK_ERRORS_TOTAL: &str = "firewatch_sink_errors_total";
/// Messages waiting for the sink.
pub const SINK_QUEUE_DEPTH: &str = "firewatch_sink_queue_depth";
/// Kafka sink groups (sink messages) waiting for delivery reports.
pub const SINK_KAFKA_PENDING_GROUPS: &str = "firewatch_sink_kafka_pending_groups";
/// Records written to the Kafka outage spool.
pub const SINK_SPOOLED_RECORDS_TOTAL: &str = "firewatch_sink_spooled_records_total";
/// Spooled records replayed to Kafka (delivery confirmed).
pub const SINK_SPOOL_REPLAYED_RECORDS_TOTAL: &str = "firewatch_sink_spool_replayed_records_total";
/// `fw.point-status` records coalesced in memory because the spool was near its bound.
pub const SINK_SPOOL_COALESCED_RECORDS_TOTAL: &str = "firewatch_sink_spool_coalesced_records_total";
/// Kafka sink state: 0 direct, 1 spooling, 2 replaying, 3 spool full (acks held).
pub const SINK_SPOOL_STATE: &str = "firewatch_sink_spool_state";
/// Records in the spool not yet delivered.
pub const SINK_SPOOL_DEPTH_RECORDS: &str = "firewatch_sink_spool_depth_records";
/// Bytes of spool segment files on disk.
pub const SINK_SPOOL_DEPTH_BYTES: &str = "firewatch_sink_spool_depth_bytes";
/// Age of the oldest spooled record not yet delivered (0 when empty).
pub const SINK_SPOOL_OLDEST_AGE_SECONDS: &str = "firewatch_sink_spool_oldest_age_seconds";
/// Records Kafka refused for good (kept locally, reported on `fw.deadletter`), by `topic`
/// and `reason`.
pub const SINK_REFUSED_RECORDS_TOTAL: &str = "firewatch_sink_refused_records_total";
/// Final Kafka delivery errors.
pub const SINK_DELIVERY_ERRORS_TOTAL: &str = "firewatch_sink_delivery_errors_total";
/// Uplink acks published, by `status`.
pub const SINK_ACKS_TOTAL: &str = "firewatch_sink_acks_total";
/// Ingest → durable latency quantiles, by `shard`, `class` (alarm|other) and `quantile`.
pub const SINK_INGEST_TO_DURABLE_SECONDS: &str = "firewatch_sink_ingest_to_durable_seconds";

/// Dead-letter rejections, by `reason`.
pub const DEADLETTER_REJECTS_TOTAL: &str = "firewatch_deadletter_rejects_total";
/// Dead-letter records not written (rate limit or full queue); the rejects are still counted.
pub const DEADLETTER_SUPPRESSED_TOTAL: &str = "firewatch_deadletter_suppressed_total";

/// Resident set size of the engine process.
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "firewatch_process_resident_memory_bytes";
/// CPU time used by the engine process.
pub const PROCESS_CPU_SECONDS_TOTAL: &str = "firewatch_process_cpu_seconds_total";
/// Points loaded from the registry.
pub const REGISTRY_POINTS: &str = "firewatch_registry_points";

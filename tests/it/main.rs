//! The one integration test binary: a module per area.

mod crash;
mod harness;
mod ingest;
mod invariants;
mod kafka;
mod kafka_commands;
mod kafka_faults;
mod loadgen;
mod rejects;
mod scenarios;
mod semantics;

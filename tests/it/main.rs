//! The one integration test binary: a module per area.

mod crash;
mod harness;
mod ingest;
mod invariants;
mod kafka;
mod rejects;
mod scenarios;
mod semantics;

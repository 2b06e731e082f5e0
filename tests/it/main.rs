//! The one integration test binary: a module per area.

mod crash;
mod harness;
mod ingest;
mod rejects;

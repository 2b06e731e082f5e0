//! firewatch: the alarm ingestion and event-stream engine of a city-wide smart fire-safety
//! system.
//!
//! Map of the crate (see ARCHITECTURE.md for threads and channels):
//! - [`ingest`]: embedded rumqttd, the identity guard, decoding and ownership checks;
//! - [`pipeline`]: the router and the shards (pure `on_event`/`on_tick` state machines);
//! - [`sink`]: durable output (the [`eventlog`]) and gateway acks after durability;
//! - [`registry`]: the compact point registry and the synthetic city generator;
//! - [`auth`], [`config`], [`telemetry`], [`app`] (wiring), [`cli`] (tools), [`clock`].

pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod eventlog;
pub mod ingest;
pub mod pipeline;
pub mod registry;
pub mod restore;
pub mod sink;
pub mod telemetry;

//! modelsync: keep a machine's ML model files in the state a `models.yaml` manifest declares.
//!
//! The crate follows InvokeAI's Model Manager V2 (record store, installer, download queue,
//! loader), made declarative by [`manifest`] + [`reconcile`]. See ARCHITECTURE.md for the map.
//! The library never prints: each long operation reports its own events to an
//! [`events::Reporter`]; [`report::Event`] gathers them for reporters that see all; only
//! [`cli`] knows about terminals.

pub mod adopt;
pub mod cli;
pub mod config;
pub mod download;
pub mod events;
pub mod hash;
pub mod hub;
pub mod install;
pub mod load;
pub mod manager;
pub mod manifest;
pub mod oci;
pub mod probe;
pub mod reconcile;
pub mod report;
pub mod retry;
pub mod scan;
pub mod store;
pub mod taxonomy;
pub mod units;
pub mod watch;

#[cfg(test)]
mod fuzz;

pub use config::AnyModelConfig;
pub use store::{RecordStore, StoreError};

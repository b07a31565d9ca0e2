//! modelsync: keep a machine's ML model files in the state a `models.yaml` manifest declares.
//!
//! The crate follows InvokeAI's Model Manager V2 (record store, installer, download queue,
//! loader), made declarative by [`manifest`] + [`reconcile`]. See ARCHITECTURE.md for the map.
//! The library never prints: long operations report [`events::Event`]s to a
//! [`events::Reporter`]; only [`cli`] knows about terminals.

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

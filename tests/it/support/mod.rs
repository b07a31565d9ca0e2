//! Shared test helpers.

pub mod hub_server;

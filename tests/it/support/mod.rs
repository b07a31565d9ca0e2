//! Shared test helpers.

pub mod probe_fixtures;

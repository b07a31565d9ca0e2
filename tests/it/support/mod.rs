//! Shared test helpers.

pub mod fileserver;

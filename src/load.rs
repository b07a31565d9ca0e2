//! The load service (the seed's ModelLoadService). Issue #8.

/// A load service event.
#[derive(Debug, Clone, serde::Serialize)]
pub enum LoadEvent {}

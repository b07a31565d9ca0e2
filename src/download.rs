//! The download queue (the seed's DownloadQueueService). Issue #4.

/// A download queue event.
#[derive(Debug, Clone, serde::Serialize)]
pub enum DownloadEvent {}

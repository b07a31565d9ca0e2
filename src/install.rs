//! The install service (the seed's ModelInstallService). Issue #5.

/// An install service event.
#[derive(Debug, Clone, serde::Serialize)]
pub enum InstallEvent {}

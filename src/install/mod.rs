//! The install service (the seed's ModelInstallService). Issue #5.

mod job;

pub use job::{InstallEvent, InstallJobId, InstallPart, InstallStatus, ModelInstallJob};

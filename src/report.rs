//! Every module's events in one enum, where the modules that report meet: the download
//! queue's, the installer's, the load service's, the reconciler's and the registry push's. Reporters that see them
//! all (the CLI's progress and `-o json` JSON Lines, a test's [`Recorder`]) take each module's
//! event type through `Into<Event>`; the modules themselves only know [`crate::events`].

use crate::download::DownloadEvent;
use crate::install::InstallEvent;
use crate::load::LoadEvent;
use crate::oci::push::PushEvent;
use crate::reconcile::ReconcileEvent;

/// Anything the library reports. Serialised (`-o json`) as
/// `{"kind": "download" | "install" | "load" | "reconcile" | "push", "event": {…}}`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", content = "event", rename_all = "snake_case")]
pub enum Event {
    /// Download queue events.
    Download(DownloadEvent),
    /// Install service events.
    Install(InstallEvent),
    /// Load service events.
    Load(LoadEvent),
    /// Reconciler events.
    Reconcile(ReconcileEvent),
    /// Registry push events.
    Push(PushEvent),
}

impl From<PushEvent> for Event {
    fn from(e: PushEvent) -> Self {
        Self::Push(e)
    }
}

impl From<DownloadEvent> for Event {
    fn from(e: DownloadEvent) -> Self {
        Self::Download(e)
    }
}

impl From<InstallEvent> for Event {
    fn from(e: InstallEvent) -> Self {
        Self::Install(e)
    }
}

impl From<LoadEvent> for Event {
    fn from(e: LoadEvent) -> Self {
        Self::Load(e)
    }
}

impl From<ReconcileEvent> for Event {
    fn from(e: ReconcileEvent) -> Self {
        Self::Reconcile(e)
    }
}

/// A recorder of every module's events, in the order they were reported.
pub type Recorder = crate::events::Recorder<Event>;

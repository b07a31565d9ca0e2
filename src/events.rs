//! Events the library reports while it works, and the [`Reporter`] trait the CLI (progress
//! bars, JSON Lines) and tests (recorders) implement. The library never prints.
//!
//! Each service defines its own event type; [`Event`] wraps them so one reporter sees all.

use std::sync::{Arc, Mutex};

/// Anything the library reports.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", content = "event", rename_all = "snake_case")]
pub enum Event {
    /// Download queue events.
    Download(crate::download::DownloadEvent),
    /// Install service events.
    Install(crate::install::InstallEvent),
    /// Load service events.
    Load(crate::load::LoadEvent),
    /// Reconciler events.
    Reconcile(crate::reconcile::ReconcileEvent),
    /// Registry push events.
    Push(crate::oci::push::PushEvent),
}

/// Receives events. Implementations must be cheap and must not block: they are called on the
/// worker that produced the event.
pub trait Reporter: Send + Sync {
    /// Called for every event.
    fn report(&self, event: &Event);
}

/// A reporter that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullReporter;

impl Reporter for NullReporter {
    fn report(&self, _: &Event) {}
}

/// A reporter that keeps every event, for tests and for callers that inspect afterwards.
#[derive(Debug, Default, Clone)]
pub struct Recorder(Arc<Mutex<Vec<Event>>>);

impl Recorder {
    /// A new, empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Reporter for Recorder {
    fn report(&self, event: &Event) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(event.clone());
    }
}

impl<R: Reporter + ?Sized> Reporter for Arc<R> {
    fn report(&self, event: &Event) {
        (**self).report(event);
    }
}

//! The [`Reporter`] trait through which the library reports what it does, and reporters every
//! caller can use ([`NullReporter`], [`Recorder`]). The library never prints.
//!
//! This module knows no module's events: each service defines its own event type `E` and
//! reports to a `Reporter<E>` (the download queue a `Reporter<DownloadEvent>`, the installer
//! a `Reporter<InstallEvent>` …). Where one reporter must see every module's events (the CLI's
//! progress and JSON Lines, a test's recording), [`crate::report::Event`] wraps them.

use std::sync::{Arc, Mutex};

/// Receives events of type `E`. Implementations must be cheap and must not block: they are
/// called on the worker that produced the event.
pub trait Reporter<E>: Send + Sync {
    /// Called for every event.
    fn report(&self, event: &E);
}

/// A reporter that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullReporter;

impl<E> Reporter<E> for NullReporter {
    fn report(&self, _: &E) {}
}

/// A reporter that keeps every event as a `W` (each reported `E` converted with `Into`), for
/// tests and for callers that inspect afterwards.
#[derive(Debug)]
pub struct Recorder<W>(Arc<Mutex<Vec<W>>>);

impl<W> Default for Recorder<W> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<W> Clone for Recorder<W> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<W: Clone> Recorder<W> {
    /// A new, empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<W> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl<W: Send, E: Clone + Into<W>> Reporter<E> for Recorder<W> {
    fn report(&self, event: &E) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(event.clone().into());
    }
}

impl<E, R: Reporter<E> + ?Sized> Reporter<E> for Arc<R> {
    fn report(&self, event: &E) {
        (**self).report(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Small(u8);

    #[derive(Debug, Clone, PartialEq)]
    enum Wide {
        Small(Small),
        Text(String),
    }

    impl From<Small> for Wide {
        fn from(s: Small) -> Self {
            Self::Small(s)
        }
    }

    impl From<String> for Wide {
        fn from(s: String) -> Self {
            Self::Text(s)
        }
    }

    #[test]
    fn one_recorder_takes_each_event_type_that_converts_into_its_own() {
        let rec = Recorder::<Wide>::new();
        let small: Arc<dyn Reporter<Small>> = Arc::new(rec.clone());
        let text: Arc<dyn Reporter<String>> = Arc::new(rec.clone());
        small.report(&Small(1));
        text.report(&"two".to_owned());
        NullReporter.report(&Small(3));
        assert_eq!(
            rec.events(),
            [Wide::Small(Small(1)), Wide::Text("two".into())]
        );
    }
}

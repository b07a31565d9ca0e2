//! A cancellation token built on `tokio::sync::watch` (tokio-util is not a dependency).
//!
//! [`CancelSource::cancel`] flips the flag once; every [`CancelToken`] clone sees it, both by
//! polling ([`CancelToken::is_cancelled`], for synchronous loops such as a download's chunk
//! loop) and by awaiting ([`CancelToken::cancelled`], for `select!`).

use tokio::sync::watch;

/// The side that cancels. Dropping it without calling [`cancel`](Self::cancel) never cancels.
#[derive(Debug)]
pub struct CancelSource {
    tx: watch::Sender<bool>,
}

/// The side that observes. Cheap to clone; hand one to every piece of work that must stop.
#[derive(Debug, Clone)]
pub struct CancelToken {
    rx: watch::Receiver<bool>,
}

impl CancelSource {
    /// A new source and its first token.
    pub fn new() -> (Self, CancelToken) {
        let (tx, rx) = watch::channel(false);
        (Self { tx }, CancelToken { rx })
    }

    /// Cancels every token of this source. Idempotent.
    pub fn cancel(&self) {
        self.tx.send_replace(true);
    }

    /// Another token of this source.
    pub fn token(&self) -> CancelToken {
        CancelToken {
            rx: self.tx.subscribe(),
        }
    }
}

impl CancelToken {
    /// A token that is never cancelled.
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(false);
        // Keeping the sender alive is not needed: `cancelled` treats a dropped source as
        // "never", so the receiver alone behaves as an uncancellable token.
        drop(tx);
        Self { rx }
    }

    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes once cancellation is requested; pends forever if the source was dropped
    /// without cancelling.
    pub async fn cancelled(&self) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|c| *c).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// A token cancelled on SIGTERM or SIGINT (Ctrl-C). Must be called inside a tokio runtime;
    /// the listening task lives as long as the runtime.
    pub fn on_termination_signals() -> std::io::Result<Self> {
        let (source, token) = CancelSource::new();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tracing::info!("termination signal received; shutting down");
                source.cancel();
            });
        }
        #[cfg(not(unix))]
        {
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    source.cancel();
                }
            });
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cancel_reaches_every_token() {
        let (source, a) = CancelSource::new();
        let b = source.token();
        let c = a.clone();
        assert!(!a.is_cancelled());
        let waiter = tokio::spawn(async move { c.cancelled().await });
        source.cancel();
        waiter.await.expect("waiter task");
        assert!(a.is_cancelled() && b.is_cancelled());
        // A second cancel and late awaits are fine.
        source.cancel();
        a.cancelled().await;
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_source_never_cancels() {
        let token = CancelToken::never();
        assert!(!token.is_cancelled());
        let r = tokio::time::timeout(std::time::Duration::from_hours(1), token.cancelled()).await;
        assert!(r.is_err(), "a token without a live source must pend");
    }
}

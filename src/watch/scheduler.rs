//! Which entry reconciles next, and why: a small delay queue in the manner of kube-rs's
//! `scheduler.rs` and `runner.rs`, kept apart from the status the HTTP handlers read.
//!
//! Pure: no clock, no tokio, no I/O. The runner passes instants in (any `Ord + Copy` time;
//! tests use plain numbers) and asks what is due.
//!
//! - **Earliest due time wins.** A second request for an entry already waiting keeps the
//!   earlier of the two times (and that request's reason).
//! - **Running entries are held.** A request for an entry that is running waits, whatever
//!   its time, until the run finishes; several such requests make one more run.
//! - **Backoff is a floor.** After a failure the entry is not started before its retry time:
//!   a resync or file event in the meantime is moved to that time, not run early. A spec
//!   change lifts the floor ([`Scheduler::reset`]).
//! - **Generations.** Every spec change bumps the entry's generation, so a result computed
//!   for an older spec is recognised as stale.

use std::collections::{BTreeMap, HashMap};

/// Why an entry was asked to reconcile; carried into the reconcile's tracing span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// A manifest change on disk (notify event, after the debounce).
    FileEvent,
    /// The periodic full resync (the first one runs at start).
    Resync,
    /// Its spec is new or changed.
    SpecChange,
    /// A retry after a failure, at its backoff.
    Retry,
    /// The converger asked to come back after a success (`requeue_after`).
    Requeue,
    /// Asked for again while it ran; runs once more after.
    Rerun,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::FileEvent => "file_event",
            Self::Resync => "resync",
            Self::SpecChange => "spec_change",
            Self::Retry => "retry",
            Self::Requeue => "requeue",
            Self::Rerun => "rerun",
        }
    }
}

/// What to schedule when a run finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next<T> {
    /// Nothing of its own (held requests still run).
    Nothing,
    /// It failed: retry at this time, and start nothing earlier.
    Backoff(T),
    /// It succeeded and asked to come back at this time.
    Requeue(T),
}

/// A run the scheduler handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Started {
    pub name: String,
    pub reason: Reason,
    /// The entry's spec generation when it started.
    pub generation: u64,
}

#[derive(Debug, Clone)]
struct Slot<T> {
    running: bool,
    /// The waiting request: when and why. Indexed in `ready` unless `running`.
    due: Option<(T, u64, Reason)>,
    /// No start before this (backoff after a failure).
    not_before: Option<T>,
    generation: u64,
    /// Left the manifest while running: dropped when the run finishes.
    removed: bool,
}

impl<T> Slot<T> {
    fn new() -> Self {
        Self {
            running: false,
            due: None,
            not_before: None,
            generation: 0,
            removed: false,
        }
    }
}

/// The per-entry delay queue. See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Scheduler<T> {
    slots: HashMap<String, Slot<T>>,
    /// Waiting requests of entries not running, earliest first; ties in request order.
    ready: BTreeMap<(T, u64), String>,
    seq: u64,
}

impl<T: Ord + Copy> Default for Scheduler<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Ord + Copy> Scheduler<T> {
    pub(crate) fn new() -> Self {
        Self {
            slots: HashMap::new(),
            ready: BTreeMap::new(),
            seq: 0,
        }
    }

    /// Makes `name` known (a new entry, or one back in the manifest, which counts as a new
    /// spec).
    pub(crate) fn add(&mut self, name: &str) {
        match self.slots.get_mut(name) {
            Some(slot) if slot.removed => {
                slot.removed = false;
                slot.generation += 1;
            }
            Some(_) => {}
            None => {
                self.slots.insert(name.to_owned(), Slot::new());
            }
        }
    }

    /// The entry's spec changed: a new generation, and no backoff floor.
    pub(crate) fn reset(&mut self, name: &str) {
        if let Some(slot) = self.slots.get_mut(name) {
            slot.generation += 1;
            slot.not_before = None;
        }
    }

    /// The entry left the manifest. A running one is dropped when it finishes.
    pub(crate) fn remove(&mut self, name: &str) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        if let Some((t, seq, _)) = slot.due.take()
            && !slot.running
        {
            self.ready.remove(&(t, seq));
        }
        if slot.running {
            slot.removed = true;
        } else {
            self.slots.remove(name);
        }
    }

    /// Asks for a run of `name` at `at` (earliest wins; held while it runs; not before its
    /// backoff). Unknown or removed entries are ignored.
    pub(crate) fn request(&mut self, name: &str, at: T, reason: Reason) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        if slot.removed {
            return;
        }
        let at = slot.not_before.map_or(at, |nb| at.max(nb));
        if let Some((t, _, _)) = slot.due
            && t <= at
        {
            return;
        }
        self.seq += 1;
        let old = slot.due.replace((at, self.seq, reason));
        if !slot.running {
            if let Some((t, seq, _)) = old {
                self.ready.remove(&(t, seq));
            }
            self.ready.insert((at, self.seq), name.to_owned());
        }
    }

    /// The earliest waiting request's time (running entries' requests do not count).
    pub(crate) fn next_due(&self) -> Option<T> {
        self.ready.keys().next().map(|(t, _)| *t)
    }

    /// Takes the earliest request due at `now`, marking its entry running.
    pub(crate) fn pop_due(&mut self, now: T) -> Option<Started> {
        let (&(t, seq), _) = self.ready.iter().next()?;
        if t > now {
            return None;
        }
        let name = self.ready.remove(&(t, seq))?;
        let slot = self.slots.get_mut(&name)?;
        let (_, _, reason) = slot.due.take()?;
        slot.running = true;
        slot.not_before = None;
        Some(Started {
            name,
            reason,
            generation: slot.generation,
        })
    }

    /// The run of `name` is over; `next` is what it asks for. A request held while it ran
    /// becomes due (as a rerun, not before a backoff). Returns `false` when the entry left
    /// the manifest meanwhile (it is forgotten).
    pub(crate) fn finish(&mut self, name: &str, next: Next<T>) -> bool {
        let Some(slot) = self.slots.get_mut(name) else {
            return false;
        };
        slot.running = false;
        if slot.removed {
            self.slots.remove(name);
            return false;
        }
        let held = slot.due.take();
        match next {
            Next::Nothing => {}
            Next::Backoff(t) => {
                slot.not_before = Some(t);
                self.request(name, t, Reason::Retry);
            }
            Next::Requeue(t) => self.request(name, t, Reason::Requeue),
        }
        if let Some((t, _, _)) = held {
            self.request(name, t, Reason::Rerun);
        }
        true
    }

    /// Whether `name` is running.
    pub(crate) fn is_running(&self, name: &str) -> bool {
        self.slots.get(name).is_some_and(|s| s.running)
    }

    /// When `name`'s waiting request is due, if it has one.
    pub(crate) fn due_at(&self, name: &str) -> Option<T> {
        self.slots.get(name).and_then(|s| s.due.map(|(t, _, _)| t))
    }

    /// The entry's spec generation (0 for an unknown one).
    pub(crate) fn generation(&self, name: &str) -> u64 {
        self.slots.get(name).map_or(0, |s| s.generation)
    }

    /// Drops every waiting request (shutdown); running entries stay marked.
    pub(crate) fn clear_waiting(&mut self) {
        self.ready.clear();
        for slot in self.slots.values_mut() {
            slot.due = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(names: &[&str]) -> Scheduler<u64> {
        let mut s = Scheduler::new();
        for n in names {
            s.add(n);
        }
        s
    }

    fn pop(s: &mut Scheduler<u64>, now: u64) -> Option<(String, Reason)> {
        s.pop_due(now).map(|st| (st.name, st.reason))
    }

    #[test]
    fn the_earliest_due_time_wins_and_ties_keep_request_order() {
        let mut s = sched(&["a", "b", "c"]);
        s.request("a", 30, Reason::Requeue);
        s.request("b", 10, Reason::Resync);
        s.request("c", 10, Reason::Resync);
        // A later request for `b` does not push it back; an earlier one for `a` pulls it in.
        s.request("b", 50, Reason::FileEvent);
        s.request("a", 20, Reason::FileEvent);
        assert_eq!(s.next_due(), Some(10));
        assert_eq!(pop(&mut s, 9), None, "nothing is due before its time");
        assert_eq!(pop(&mut s, 10), Some(("b".into(), Reason::Resync)));
        assert_eq!(pop(&mut s, 10), Some(("c".into(), Reason::Resync)));
        assert_eq!(pop(&mut s, 10), None);
        assert_eq!(s.next_due(), Some(20));
        assert_eq!(pop(&mut s, 25), Some(("a".into(), Reason::FileEvent)));
        assert_eq!(s.next_due(), None);
        assert!(s.is_running("a") && s.is_running("b") && s.is_running("c"));
    }

    #[test]
    fn a_running_entry_is_held_and_a_rerun_asked_meanwhile_runs_once_after() {
        let mut s = sched(&["a"]);
        s.request("a", 0, Reason::Resync);
        assert_eq!(pop(&mut s, 0), Some(("a".into(), Reason::Resync)));
        // Three requests while it runs: none starts a second run at once.
        s.request("a", 1, Reason::FileEvent);
        s.request("a", 2, Reason::Resync);
        s.request("a", 0, Reason::SpecChange);
        assert_eq!(s.next_due(), None, "held while running");
        assert_eq!(pop(&mut s, 100), None);
        assert!(s.finish("a", Next::Nothing));
        assert_eq!(pop(&mut s, 100), Some(("a".into(), Reason::Rerun)));
        assert!(s.finish("a", Next::Nothing));
        assert_eq!(pop(&mut s, 1000), None, "exactly one run after");
    }

    #[test]
    fn a_retry_after_is_a_floor_for_every_request_until_it_is_due() {
        let mut s = sched(&["a", "b"]);
        s.request("a", 0, Reason::Resync);
        s.request("b", 0, Reason::Resync);
        assert_eq!(pop(&mut s, 0).map(|p| p.0), Some("a".into()));
        assert_eq!(pop(&mut s, 0).map(|p| p.0), Some("b".into()));
        // `a` was rate limited: Retry-After 300; `b` converged.
        assert!(s.finish("a", Next::Backoff(300)));
        assert!(s.finish("b", Next::Nothing));
        assert_eq!(s.due_at("a"), Some(300));
        // A resync at 60 runs `b` now but leaves `a` at its retry time.
        s.request("a", 60, Reason::Resync);
        s.request("b", 60, Reason::Resync);
        assert_eq!(pop(&mut s, 60), Some(("b".into(), Reason::Resync)));
        assert_eq!(pop(&mut s, 60), None);
        assert_eq!(s.next_due(), Some(300));
        assert_eq!(pop(&mut s, 300), Some(("a".into(), Reason::Retry)));
    }

    #[test]
    fn a_rerun_held_behind_a_failure_waits_for_the_backoff() {
        let mut s = sched(&["a"]);
        s.request("a", 0, Reason::Resync);
        pop(&mut s, 0);
        s.request("a", 5, Reason::FileEvent);
        assert!(s.finish("a", Next::Backoff(40)));
        assert_eq!(s.next_due(), Some(40));
        assert_eq!(pop(&mut s, 39), None);
        assert_eq!(pop(&mut s, 40), Some(("a".into(), Reason::Retry)));
    }

    #[test]
    fn a_spec_change_lifts_the_backoff_and_makes_results_stale() {
        let mut s = sched(&["a"]);
        s.request("a", 0, Reason::Resync);
        let first = s.pop_due(0).expect("due");
        s.finish("a", Next::Backoff(600));
        s.reset("a");
        s.request("a", 10, Reason::SpecChange);
        let second = s.pop_due(10).expect("runs at once");
        assert_eq!(second.reason, Reason::SpecChange);
        assert_ne!(first.generation, second.generation);
        assert_eq!(s.generation("a"), second.generation);
    }

    #[test]
    fn removed_entries_are_forgotten_once_their_run_ends() {
        let mut s = sched(&["a", "b"]);
        s.request("a", 0, Reason::Resync);
        s.request("b", 5, Reason::Resync);
        pop(&mut s, 0);
        s.remove("a");
        s.remove("b");
        assert_eq!(s.next_due(), None, "b's waiting request went with it");
        s.request("a", 1, Reason::FileEvent);
        assert!(!s.finish("a", Next::Backoff(9)), "a left while running");
        assert_eq!(s.next_due(), None);
        // Back in the manifest while still running: a new generation.
        s.add("b");
        s.request("b", 0, Reason::SpecChange);
        let b = s.pop_due(0).expect("b");
        s.remove("b");
        s.add("b");
        assert!(s.generation("b") > b.generation);
        assert!(s.finish("b", Next::Nothing));
    }

    #[test]
    fn a_requeue_is_pulled_in_by_an_earlier_resync() {
        let mut s = sched(&["a"]);
        s.request("a", 0, Reason::Resync);
        pop(&mut s, 0);
        s.finish("a", Next::Requeue(600));
        assert_eq!(s.due_at("a"), Some(600));
        s.request("a", 300, Reason::Resync);
        assert_eq!(pop(&mut s, 300), Some(("a".into(), Reason::Resync)));
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn clear_waiting_drops_every_request() {
        let mut s = sched(&["a", "b"]);
        s.request("a", 0, Reason::Resync);
        s.request("b", 0, Reason::Resync);
        pop(&mut s, 0);
        s.request("a", 1, Reason::Resync);
        s.clear_waiting();
        assert_eq!(s.next_due(), None);
        s.finish("a", Next::Nothing);
        assert_eq!(pop(&mut s, 100), None);
    }
}

//! The model cache (the seed's `ModelCache`): host copies under a RAM budget, device copies
//! under a VRAM budget, least-recently-used eviction of unlocked entries, single-flight loads.
//!
//! Keys are `<record key>` or `<record key>:<submodel>`. One mutex guards the bookkeeping; file
//! reads and device transfers happen outside it, so a slow load never blocks hits.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use super::backends::{DeviceBackend, DeviceModel, ExecDevice};
use super::{AnyModel, LoadError, ModelGuard};
use crate::taxonomy::SubModelType;

/// The cache key of a model or one of its submodels.
pub fn cache_key(key: &str, submodel: Option<SubModelType>) -> String {
    match submodel {
        None => key.to_owned(),
        Some(s) => format!("{key}:{s}"),
    }
}

/// Whether cache key `entry` belongs to record `key` (itself or one of its submodels), never
/// to a record that merely shares a prefix (`ab` vs `abc`).
fn belongs_to(entry: &str, key: &str) -> bool {
    entry
        .strip_prefix(key)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
}

/// Counters and occupancy.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Lookups answered from the cache (including waits on a concurrent load).
    pub hits: u64,
    /// Lookups that had to load.
    pub misses: u64,
    /// Loads that completed.
    pub loads: u64,
    /// Entries dropped from RAM to make room.
    pub evictions: u64,
    /// Device copies dropped from VRAM to make room (the host copy stays).
    pub offloads: u64,
    /// Entries held.
    pub entries: usize,
    /// Entries locked right now.
    pub locked: usize,
    /// RAM budget, bytes.
    pub ram_budget: u64,
    /// VRAM budget, bytes.
    pub vram_budget: u64,
    /// RAM in use (host copies, plus device copies on the CPU), bytes.
    pub ram_used: u64,
    /// VRAM in use, bytes.
    pub vram_used: u64,
    /// Bytes by device (`cpu`, `cuda:0` …).
    pub bytes_by_device: BTreeMap<String, u64>,
}

struct DeviceCopy {
    model: DeviceModel,
    bytes: u64,
    device: ExecDevice,
}

struct Entry {
    model: Arc<AnyModel>,
    host_bytes: u64,
    device: Option<DeviceCopy>,
    locks: usize,
    stale: bool,
    last_used: u64,
}

/// A load in progress; waiters block on it instead of loading again.
#[derive(Default)]
struct Flight {
    done: Mutex<Option<Result<Arc<AnyModel>, String>>>,
    cv: Condvar,
}

impl Flight {
    fn finish(&self, r: Result<Arc<AnyModel>, String>) {
        *self.done.lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
        self.cv.notify_all();
    }

    fn wait(&self) -> Result<Arc<AnyModel>, String> {
        let mut g = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(r) = g.as_ref() {
                return r.clone();
            }
            g = self.cv.wait(g).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    flights: HashMap<String, Arc<Flight>>,
    tick: u64,
    reserved_ram: u64,
    reserved_vram: u64,
    hits: u64,
    misses: u64,
    loads: u64,
    evictions: u64,
    offloads: u64,
}

impl State {
    fn touch(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn ram_used(&self) -> u64 {
        self.reserved_ram
            + self
                .entries
                .values()
                .map(|e| {
                    e.host_bytes
                        + e.device
                            .as_ref()
                            .filter(|d| d.device == ExecDevice::Cpu)
                            .map_or(0, |d| d.bytes)
                })
                .sum::<u64>()
    }

    fn vram_used(&self) -> u64 {
        self.reserved_vram
            + self
                .entries
                .values()
                .filter_map(|e| e.device.as_ref())
                .filter(|d| d.device != ExecDevice::Cpu)
                .map(|d| d.bytes)
                .sum::<u64>()
    }

    fn locked_bytes(&self, vram: bool) -> u64 {
        self.entries
            .values()
            .filter(|e| e.locks > 0)
            .map(|e| {
                let dev = e.device.as_ref();
                if vram {
                    dev.filter(|d| d.device != ExecDevice::Cpu)
                        .map_or(0, |d| d.bytes)
                } else {
                    e.host_bytes
                        + dev
                            .filter(|d| d.device == ExecDevice::Cpu)
                            .map_or(0, |d| d.bytes)
                }
            })
            .sum()
    }

    /// Evicts least recently used unlocked entries (never `keep`) until `needed` more RAM bytes
    /// fit the budget.
    fn make_room_ram(&mut self, needed: u64, budget: u64, keep: &str) -> Result<(), LoadError> {
        while self.ram_used().saturating_add(needed) > budget {
            let victim = self
                .entries
                .iter()
                .filter(|(k, e)| e.locks == 0 && k.as_str() != keep)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else {
                return Err(LoadError::OutOfBudget {
                    key: keep.to_owned(),
                    needed,
                    budget,
                    locked: self.locked_bytes(false),
                    device: "cpu".into(),
                });
            };
            self.entries.remove(&victim);
            self.evictions += 1;
        }
        Ok(())
    }

    /// Drops device copies of least recently used unlocked entries (never `keep`'s) until
    /// `needed` more VRAM bytes fit the budget.
    fn make_room_vram(
        &mut self,
        needed: u64,
        budget: u64,
        keep: &str,
        device: ExecDevice,
    ) -> Result<(), LoadError> {
        while self.vram_used().saturating_add(needed) > budget {
            let victim = self
                .entries
                .iter_mut()
                .filter(|(k, e)| e.locks == 0 && e.device.is_some() && k.as_str() != keep)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(_, e)| e);
            let Some(victim) = victim else {
                return Err(LoadError::OutOfBudget {
                    key: keep.to_owned(),
                    needed,
                    budget,
                    locked: self.locked_bytes(true),
                    device: device.to_string(),
                });
            };
            victim.device = None;
            self.offloads += 1;
        }
        Ok(())
    }
}

struct Inner {
    ram_budget: u64,
    vram_budget: u64,
    backend: Arc<dyn DeviceBackend>,
    state: Mutex<State>,
    /// Serialises device transfers: they are bandwidth-bound anyway, and one at a time keeps
    /// the VRAM reservation simple.
    transfer: Mutex<()>,
}

/// The cache. Cloning shares it.
#[derive(Clone)]
pub struct ModelCache {
    inner: Arc<Inner>,
}

impl fmt::Debug for ModelCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelCache")
            .field("backend", &self.inner.backend.name())
            .field("device", &self.inner.backend.device())
            .field("stats", &self.stats())
            .finish()
    }
}

/// Completes a flight with an error if the loader unwinds, so waiters never hang.
struct FlightGuard<'a> {
    cache: &'a ModelCache,
    key: &'a str,
    reserved: u64,
    armed: bool,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut st = self.cache.state();
            st.reserved_ram = st.reserved_ram.saturating_sub(self.reserved);
            if let Some(f) = st.flights.remove(self.key) {
                f.finish(Err("the loader panicked".into()));
            }
        }
    }
}

impl ModelCache {
    /// A cache with these budgets (bytes) whose device copies `backend` makes.
    pub fn new(ram_budget: u64, vram_budget: u64, backend: Arc<dyn DeviceBackend>) -> Self {
        Self {
            inner: Arc::new(Inner {
                ram_budget,
                vram_budget,
                backend,
                state: Mutex::new(State::default()),
                transfer: Mutex::new(()),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The execution device of the backend.
    pub fn device(&self) -> ExecDevice {
        self.inner.backend.device()
    }

    /// The backend's name (`host`, `torch`).
    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// The cached host model under `key`, if any (counts a hit or a miss).
    pub fn get(&self, key: &str) -> Option<Arc<AnyModel>> {
        let mut st = self.state();
        let tick = st.touch();
        if let Some(e) = st.entries.get_mut(key) {
            e.last_used = tick;
            let m = e.model.clone();
            st.hits += 1;
            Some(m)
        } else {
            st.misses += 1;
            None
        }
    }

    /// The cached model under `key`, or the result of `load` — called once even when several
    /// threads ask at the same time; the others wait for it. `estimate` (host bytes) is asked
    /// first so a model larger than the budget is refused before anything is read, and room
    /// is made before loading. Returns the model and whether it was a hit.
    pub fn get_or_load(
        &self,
        key: &str,
        estimate: impl FnOnce() -> Result<u64, LoadError>,
        load: impl FnOnce() -> Result<AnyModel, LoadError>,
    ) -> Result<(Arc<AnyModel>, bool), LoadError> {
        let flight = {
            let mut st = self.state();
            let tick = st.touch();
            if let Some(e) = st.entries.get_mut(key) {
                e.last_used = tick;
                let m = e.model.clone();
                st.hits += 1;
                return Ok((m, true));
            }
            if let Some(f) = st.flights.get(key).cloned() {
                st.hits += 1;
                drop(st);
                return f
                    .wait()
                    .map(|m| (m, true))
                    .map_err(|reason| LoadError::Concurrent {
                        key: key.to_owned(),
                        reason,
                    });
            }
            st.misses += 1;
            let f = Arc::new(Flight::default());
            st.flights.insert(key.to_owned(), f.clone());
            f
        };
        let mut guard = FlightGuard {
            cache: self,
            key,
            reserved: 0,
            armed: true,
        };
        let result = self.load_leader(key, estimate, load, &mut guard);
        guard.armed = false;
        let mut st = self.state();
        st.reserved_ram = st.reserved_ram.saturating_sub(guard.reserved);
        st.flights.remove(key);
        match result {
            Ok(model) => {
                let model = Arc::new(model);
                let bytes = model.bytes();
                let fits = if bytes > self.inner.ram_budget {
                    Err(self.too_large(key, bytes, ExecDevice::Cpu))
                } else {
                    st.make_room_ram(bytes, self.inner.ram_budget, key)
                };
                if let Err(e) = fits {
                    flight.finish(Err(crate::retry::one_line(&e)));
                    return Err(e);
                }
                let tick = st.touch();
                st.entries.insert(
                    key.to_owned(),
                    Entry {
                        model: model.clone(),
                        host_bytes: bytes,
                        device: None,
                        locks: 0,
                        stale: false,
                        last_used: tick,
                    },
                );
                st.loads += 1;
                flight.finish(Ok(model.clone()));
                Ok((model, false))
            }
            Err(e) => {
                flight.finish(Err(crate::retry::one_line(&e)));
                Err(e)
            }
        }
    }

    fn load_leader(
        &self,
        key: &str,
        estimate: impl FnOnce() -> Result<u64, LoadError>,
        load: impl FnOnce() -> Result<AnyModel, LoadError>,
        guard: &mut FlightGuard<'_>,
    ) -> Result<AnyModel, LoadError> {
        let needed = estimate()?;
        if needed > self.inner.ram_budget {
            return Err(self.too_large(key, needed, ExecDevice::Cpu));
        }
        {
            let mut st = self.state();
            st.make_room_ram(needed, self.inner.ram_budget, key)?;
            st.reserved_ram += needed;
            guard.reserved = needed;
        }
        load()
    }

    fn too_large(&self, key: &str, needed: u64, device: ExecDevice) -> LoadError {
        LoadError::TooLarge {
            key: key.to_owned(),
            needed,
            budget: self.budget(device),
            device: device.to_string(),
        }
    }

    fn budget(&self, device: ExecDevice) -> u64 {
        match device {
            ExecDevice::Cpu => self.inner.ram_budget,
            ExecDevice::Cuda(_) => self.inner.vram_budget,
        }
    }

    /// Locks `key` on the execution device, making the device copy if needed (re-inserting the
    /// host model if it was evicted meanwhile). The guard unlocks on drop.
    pub fn lock(&self, key: &str, model: &Arc<AnyModel>) -> Result<ModelGuard, LoadError> {
        {
            let mut st = self.state();
            let tick = st.touch();
            if !st.entries.contains_key(key) {
                let bytes = model.bytes();
                if bytes > self.inner.ram_budget {
                    return Err(self.too_large(key, bytes, ExecDevice::Cpu));
                }
                st.make_room_ram(bytes, self.inner.ram_budget, key)?;
                st.entries.insert(
                    key.to_owned(),
                    Entry {
                        model: model.clone(),
                        host_bytes: bytes,
                        device: None,
                        locks: 0,
                        stale: false,
                        last_used: tick,
                    },
                );
            }
            let e = st.entries.get_mut(key).expect("inserted above");
            e.locks += 1;
            e.last_used = tick;
            if let Some(d) = &e.device {
                return Ok(self.guard(key, d.model.clone()));
            }
        }
        match self.transfer(key) {
            Ok(m) => Ok(self.guard(key, m)),
            Err(e) => {
                self.unlock(key);
                Err(e)
            }
        }
    }

    fn guard(&self, key: &str, model: DeviceModel) -> ModelGuard {
        ModelGuard {
            cache: self.clone(),
            key: key.to_owned(),
            model,
        }
    }

    /// Makes the device copy of a locked entry.
    fn transfer(&self, key: &str) -> Result<DeviceModel, LoadError> {
        let _one_at_a_time = self
            .inner
            .transfer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let backend = &self.inner.backend;
        let device = backend.device();
        let (host, needed) = {
            let mut st = self.state();
            let e = st.entries.get(key).expect("a locked entry stays");
            if let Some(d) = &e.device {
                return Ok(d.model.clone());
            }
            let host = e.model.clone();
            let needed = backend.device_bytes(&host)?;
            if needed > self.budget(device) {
                return Err(self.too_large(key, needed, device));
            }
            match device {
                ExecDevice::Cpu => {
                    st.make_room_ram(needed, self.inner.ram_budget, key)?;
                    st.reserved_ram += needed;
                }
                ExecDevice::Cuda(_) => {
                    st.make_room_vram(needed, self.inner.vram_budget, key, device)?;
                    st.reserved_vram += needed;
                }
            }
            (host, needed)
        };
        let result = backend.to_device(&host);
        let mut st = self.state();
        match device {
            ExecDevice::Cpu => st.reserved_ram -= needed,
            ExecDevice::Cuda(_) => st.reserved_vram -= needed,
        }
        let model = result?;
        let bytes = model.device_bytes();
        let e = st.entries.get_mut(key).expect("a locked entry stays");
        e.device = Some(DeviceCopy {
            model: model.clone(),
            bytes,
            device,
        });
        Ok(model)
    }

    /// Releases one lock; the last unlock of a stale entry evicts it.
    pub(crate) fn unlock(&self, key: &str) {
        let mut st = self.state();
        let tick = st.touch();
        let remove = match st.entries.get_mut(key) {
            Some(e) => {
                e.locks = e.locks.saturating_sub(1);
                e.last_used = tick;
                e.locks == 0 && e.stale
            }
            None => false,
        };
        if remove {
            st.entries.remove(key);
        }
    }

    /// Marks the entry under exactly `key` stale: evicted now if unlocked, else at its last
    /// unlock. Use it when a record's files or settings change.
    pub fn mark_stale(&self, key: &str) {
        let mut st = self.state();
        let remove = match st.entries.get_mut(key) {
            Some(e) if e.locks > 0 => {
                e.stale = true;
                false
            }
            Some(_) => true,
            None => false,
        };
        if remove {
            st.entries.remove(key);
        }
    }

    /// Marks record `key` and all its submodel entries stale (never a record whose key merely
    /// starts with `key`).
    pub fn drop_model(&self, key: &str) {
        let keys: Vec<String> = self
            .state()
            .entries
            .keys()
            .filter(|k| belongs_to(k, key))
            .cloned()
            .collect();
        for k in keys {
            self.mark_stale(&k);
        }
    }

    /// Whether `key` is cached (does not count as a lookup).
    pub fn contains(&self, key: &str) -> bool {
        self.state().entries.contains_key(key)
    }

    /// Whether `key` has a device copy.
    pub fn is_on_device(&self, key: &str) -> bool {
        self.state()
            .entries
            .get(key)
            .is_some_and(|e| e.device.is_some())
    }

    /// Cached keys, least recently used first.
    pub fn keys_lru(&self) -> Vec<String> {
        let st = self.state();
        let mut v: Vec<(&String, u64)> = st.entries.iter().map(|(k, e)| (k, e.last_used)).collect();
        v.sort_by_key(|(_, t)| *t);
        v.into_iter().map(|(k, _)| k.clone()).collect()
    }

    /// Counters and occupancy.
    pub fn stats(&self) -> CacheStats {
        let st = self.state();
        let mut by_device: BTreeMap<String, u64> = BTreeMap::new();
        for e in st.entries.values() {
            *by_device.entry("cpu".into()).or_default() += e.host_bytes;
            if let Some(d) = &e.device {
                *by_device.entry(d.device.to_string()).or_default() += d.bytes;
            }
        }
        CacheStats {
            hits: st.hits,
            misses: st.misses,
            loads: st.loads,
            evictions: st.evictions,
            offloads: st.offloads,
            entries: st.entries.len(),
            locked: st.entries.values().filter(|e| e.locks > 0).count(),
            ram_budget: self.inner.ram_budget,
            vram_budget: self.inner.vram_budget,
            ram_used: st.ram_used(),
            vram_used: st.vram_used(),
            bytes_by_device: by_device,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_keys_are_distinct() {
        assert!(belongs_to("ab", "ab"));
        assert!(belongs_to("ab:vae", "ab"));
        assert!(!belongs_to("abc", "ab"));
        assert!(!belongs_to("abc:vae", "ab"));
        assert_eq!(cache_key("k", Some(SubModelType::Vae)), "k:vae");
    }
}

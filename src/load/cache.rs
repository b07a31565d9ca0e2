//! The model cache (the seed's `ModelCache`): host copies under a RAM budget, device copies
//! under a VRAM budget, least-recently-used eviction of unlocked entries, single-flight loads,
//! and a keep-alive that releases entries unused for a while.
//!
//! Keys are `<record key>`, `<record key>:<submodel>`, either with `@<precision>` when a load
//! asks for a precision other than the cache's default, or `file:…` for loads without a record.
//! One mutex guards the bookkeeping; file reads and device moves happen outside it, so a slow
//! load never blocks hits.
//!
//! VRAM: the cache keeps its device bytes within `min(vram budget, device capacity − working
//! memory)` (the working-memory reserve is left free for activations, as InvokeAI's
//! `device_working_mem_gb`). To make room it takes unlocked device copies, least recently
//! used first, and moves each to RAM when RAM has room for it without evicting anything
//! (an offload: the next lock moves it back without reading or converting the file), else
//! drops it (the host copy stays). A locked entry is never moved or evicted.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::backends::{DeviceBackend, DeviceModel, ExecDevice, Precision};
use super::{AnyModel, LoadError, ModelGuard};
use crate::taxonomy::SubModelType;

/// The cache key of a model or one of its submodels.
pub fn cache_key(key: &str, submodel: Option<SubModelType>) -> String {
    match submodel {
        None => key.to_owned(),
        Some(s) => format!("{key}:{s}"),
    }
}

/// Whether cache key `entry` belongs to record `key` (itself, one of its submodels or
/// precisions), never to a record that merely shares a prefix (`ab` vs `abc`).
fn belongs_to(entry: &str, key: &str) -> bool {
    entry
        .strip_prefix(key)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(':') || rest.starts_with('@'))
}

/// Budgets and policies of a cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// RAM budget, bytes (host copies, offloaded copies, device copies on the CPU).
    pub ram: u64,
    /// VRAM budget, bytes.
    pub vram: u64,
    /// Device memory kept free for activations, bytes, when the backend knows the device's
    /// capacity (default 3 GiB, InvokeAI's `device_working_mem_gb`).
    pub working_memory: u64,
    /// Entries unused for this long are released (`None`: kept until evicted).
    pub keep_alive: Option<Duration>,
    /// Precision of device copies when a load asks for none.
    pub precision: Precision,
}

/// Default working-memory reserve: 3 GiB.
pub const DEFAULT_WORKING_MEMORY: u64 = 3 << 30;

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ram: 8 << 30,
            vram: 16 << 30,
            working_memory: DEFAULT_WORKING_MEMORY,
            keep_alive: None,
            precision: Precision::Auto,
        }
    }
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
    /// Device copies moved to RAM to make room in VRAM.
    pub offloads: u64,
    /// Device copies dropped to make room in VRAM (the host copy stays).
    pub device_drops: u64,
    /// Entries released by the keep-alive.
    pub expired: u64,
    /// Bytes moved between memories (to the device, offloads, reloads).
    pub bytes_moved: u64,
    /// Entries held.
    pub entries: usize,
    /// Entries locked right now.
    pub locked: usize,
    /// Entries exempt from the keep-alive (preloaded).
    pub pinned: usize,
    /// RAM budget, bytes.
    pub ram_budget: u64,
    /// VRAM budget, bytes.
    pub vram_budget: u64,
    /// The VRAM the cache may use: the budget, or less to keep the working-memory reserve
    /// free of the device's capacity.
    pub vram_limit: u64,
    /// Device capacity, when the backend knows it.
    pub vram_capacity: Option<u64>,
    /// RAM in use (host copies, offloaded copies, device copies on the CPU), bytes.
    pub ram_used: u64,
    /// VRAM in use, bytes.
    pub vram_used: u64,
    /// Bytes by device (`cpu`, `cuda:0` …).
    pub bytes_by_device: BTreeMap<String, u64>,
}

/// A copy made by the backend: on the execution device, or offloaded to RAM (`on` is `Cpu`
/// while the execution device is not).
struct DeviceCopy {
    model: DeviceModel,
    bytes: u64,
    on: ExecDevice,
}

struct Entry {
    model: Arc<AnyModel>,
    host_bytes: u64,
    copy: Option<DeviceCopy>,
    locks: usize,
    stale: bool,
    pinned: bool,
    last_used: u64,
    used_at: Instant,
}

impl Entry {
    fn new(model: Arc<AnyModel>, tick: u64) -> Self {
        Self {
            host_bytes: model.bytes(),
            model,
            copy: None,
            locks: 0,
            stale: false,
            pinned: false,
            last_used: tick,
            used_at: Instant::now(),
        }
    }

    /// RAM bytes: the host copy plus a copy that lives on the CPU.
    fn ram_bytes(&self) -> u64 {
        self.host_bytes
            + self
                .copy
                .as_ref()
                .filter(|c| c.on == ExecDevice::Cpu)
                .map_or(0, |c| c.bytes)
    }

    /// VRAM bytes: a copy on a CUDA device.
    fn vram_bytes(&self) -> u64 {
        self.copy
            .as_ref()
            .filter(|c| c.on != ExecDevice::Cpu)
            .map_or(0, |c| c.bytes)
    }
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
    device_drops: u64,
    expired: u64,
    bytes_moved: u64,
}

impl State {
    fn touch(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn ram_used(&self) -> u64 {
        self.reserved_ram + self.entries.values().map(Entry::ram_bytes).sum::<u64>()
    }

    fn vram_used(&self) -> u64 {
        self.reserved_vram + self.entries.values().map(Entry::vram_bytes).sum::<u64>()
    }

    fn locked_bytes(&self, vram: bool) -> u64 {
        self.entries
            .values()
            .filter(|e| e.locks > 0)
            .map(|e| if vram { e.vram_bytes() } else { e.ram_bytes() })
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

    /// Removes `key` when it is unlocked (a stale entry at its last unlock, an expired one).
    fn remove_if_unlocked(&mut self, key: &str) -> bool {
        if self.entries.get(key).is_some_and(|e| e.locks == 0) {
            self.entries.remove(key);
            true
        } else {
            false
        }
    }
}

struct Inner {
    config: CacheConfig,
    backend: Arc<dyn DeviceBackend>,
    state: Mutex<State>,
    /// Serialises device moves: they are bandwidth-bound anyway, and one at a time keeps the
    /// VRAM reservation simple (an entry whose copy is being moved has none in the map, so
    /// a lock of it waits here).
    transfer: Mutex<()>,
    /// Whether the keep-alive task was started.
    keep_alive_started: AtomicBool,
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
    /// A cache with these budgets (bytes) whose device copies `backend` makes; the other
    /// settings are [`CacheConfig`]'s defaults.
    pub fn new(ram_budget: u64, vram_budget: u64, backend: Arc<dyn DeviceBackend>) -> Self {
        Self::with_config(
            CacheConfig {
                ram: ram_budget,
                vram: vram_budget,
                ..CacheConfig::default()
            },
            backend,
        )
    }

    /// A cache with `config` whose device copies `backend` makes.
    pub fn with_config(config: CacheConfig, backend: Arc<dyn DeviceBackend>) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                backend,
                state: Mutex::new(State::default()),
                transfer: Mutex::new(()),
                keep_alive_started: AtomicBool::new(false),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The settings.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// The execution device of the backend.
    pub fn device(&self) -> ExecDevice {
        self.inner.backend.device()
    }

    /// The backend's name (`host`, `torch`, `sim`).
    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// The VRAM the cache may fill: the budget, less where the device's capacity minus the
    /// working-memory reserve is smaller.
    pub fn vram_limit(&self) -> u64 {
        let c = &self.inner.config;
        match self.inner.backend.capacity() {
            Some(cap) => c.vram.min(cap.saturating_sub(c.working_memory)),
            None => c.vram,
        }
    }

    /// The cached host model under `key`, if any (counts a hit or a miss).
    pub fn get(&self, key: &str) -> Option<Arc<AnyModel>> {
        let mut st = self.state();
        let tick = st.touch();
        if let Some(e) = st.entries.get_mut(key) {
            e.last_used = tick;
            e.used_at = Instant::now();
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
        self.ensure_keep_alive();
        let flight = {
            let mut st = self.state();
            self.expire_locked(&mut st, Instant::now());
            let tick = st.touch();
            if let Some(e) = st.entries.get_mut(key) {
                e.last_used = tick;
                e.used_at = Instant::now();
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
                let fits = if bytes > self.inner.config.ram {
                    Err(self.too_large(key, bytes, ExecDevice::Cpu))
                } else {
                    st.make_room_ram(bytes, self.inner.config.ram, key)
                };
                if let Err(e) = fits {
                    flight.finish(Err(crate::retry::one_line(&e)));
                    return Err(e);
                }
                let tick = st.touch();
                st.entries
                    .insert(key.to_owned(), Entry::new(model.clone(), tick));
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
        if needed > self.inner.config.ram {
            return Err(self.too_large(key, needed, ExecDevice::Cpu));
        }
        {
            let mut st = self.state();
            st.make_room_ram(needed, self.inner.config.ram, key)?;
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
            ExecDevice::Cpu => self.inner.config.ram,
            ExecDevice::Cuda(_) => self.vram_limit(),
        }
    }

    /// Locks `key` on the execution device with the cache's default precision; see
    /// [`lock_as`](Self::lock_as).
    pub fn lock(&self, key: &str, model: &Arc<AnyModel>) -> Result<ModelGuard, LoadError> {
        self.lock_as(key, model, self.inner.config.precision)
    }

    /// Locks `key` on the execution device, making the device copy in `precision` if there is
    /// none (or moving an offloaded copy back), and re-inserting the host model if it was
    /// evicted meanwhile. The guard unlocks on drop. A copy that exists keeps the precision it
    /// was made with: loads that want another precision use another key (`@fp16`).
    pub fn lock_as(
        &self,
        key: &str,
        model: &Arc<AnyModel>,
        precision: Precision,
    ) -> Result<ModelGuard, LoadError> {
        {
            let mut st = self.state();
            let tick = st.touch();
            if !st.entries.contains_key(key) {
                let bytes = model.bytes();
                if bytes > self.inner.config.ram {
                    return Err(self.too_large(key, bytes, ExecDevice::Cpu));
                }
                st.make_room_ram(bytes, self.inner.config.ram, key)?;
                st.entries
                    .insert(key.to_owned(), Entry::new(model.clone(), tick));
            }
            let exec = self.device();
            let e = st.entries.get_mut(key).expect("inserted above");
            e.locks += 1;
            e.last_used = tick;
            e.used_at = Instant::now();
            if let Some(c) = e.copy.as_ref().filter(|c| c.on == exec) {
                return Ok(self.guard(key, c.model.clone()));
            }
        }
        match self.transfer(key, precision) {
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

    /// Puts a locked entry on the execution device: moves its offloaded copy back, or makes a
    /// new copy, after making room.
    fn transfer(&self, key: &str, precision: Precision) -> Result<DeviceModel, LoadError> {
        let _one_at_a_time = self
            .inner
            .transfer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let backend = &self.inner.backend;
        let device = backend.device();
        let (host, offloaded, needed) = {
            let st = self.state();
            let e = st.entries.get(key).expect("a locked entry stays");
            match &e.copy {
                Some(c) if c.on == device => return Ok(c.model.clone()),
                Some(c) => (e.model.clone(), Some(c.model.clone()), c.bytes),
                None => (
                    e.model.clone(),
                    None,
                    backend.device_bytes(&e.model, precision)?,
                ),
            }
        };
        if needed > self.budget(device) {
            return Err(self.too_large(key, needed, device));
        }
        match device {
            ExecDevice::Cpu => {
                let mut st = self.state();
                st.make_room_ram(needed, self.inner.config.ram, key)?;
                st.reserved_ram += needed;
            }
            ExecDevice::Cuda(_) => self.make_room_vram(needed, key, device)?,
        }
        let result = match &offloaded {
            Some(c) => backend.reload(key, c),
            None => backend.to_device(key, &host, precision),
        };
        let mut st = self.state();
        match device {
            ExecDevice::Cpu => st.reserved_ram -= needed,
            ExecDevice::Cuda(_) => st.reserved_vram -= needed,
        }
        let model = result?;
        let bytes = model.device_bytes();
        st.bytes_moved += bytes;
        let e = st.entries.get_mut(key).expect("a locked entry stays");
        let old = e.copy.replace(DeviceCopy {
            model: model.clone(),
            bytes,
            on: device,
        });
        drop(st);
        drop(old);
        Ok(model)
    }

    /// Takes unlocked device copies, least recently used first (never `keep`'s), until
    /// `needed` more VRAM bytes fit; each goes to RAM when RAM has room for it, else is
    /// dropped. Ends with `needed` reserved. Called with the transfer lock held.
    fn make_room_vram(&self, needed: u64, keep: &str, device: ExecDevice) -> Result<(), LoadError> {
        loop {
            let limit = self.vram_limit();
            let mut st = self.state();
            if st.vram_used().saturating_add(needed) <= limit {
                st.reserved_vram += needed;
                return Ok(());
            }
            let victim = st
                .entries
                .iter()
                .filter(|(k, e)| e.locks == 0 && e.vram_bytes() > 0 && k.as_str() != keep)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else {
                return Err(LoadError::OutOfBudget {
                    key: keep.to_owned(),
                    needed,
                    budget: limit,
                    locked: st.locked_bytes(true),
                    device: device.to_string(),
                });
            };
            let copy = st
                .entries
                .get_mut(&victim)
                .and_then(|e| e.copy.take())
                .expect("the victim has a device copy");
            let bytes = copy.bytes;
            let to_ram = st.ram_used().saturating_add(bytes) <= self.inner.config.ram;
            st.reserved_vram += bytes;
            if to_ram {
                st.reserved_ram += bytes;
            }
            drop(st);
            let moved = if to_ram {
                self.inner.backend.offload(&victim, &copy.model)
            } else {
                Ok(None)
            };
            let mut st = self.state();
            st.reserved_vram -= bytes;
            if to_ram {
                st.reserved_ram -= bytes;
            }
            match moved {
                Ok(Some(m)) => {
                    let b = m.device_bytes();
                    if let Some(e) = st.entries.get_mut(&victim).filter(|e| e.copy.is_none()) {
                        e.copy = Some(DeviceCopy {
                            model: m,
                            bytes: b,
                            on: ExecDevice::Cpu,
                        });
                    }
                    st.offloads += 1;
                    st.bytes_moved += b;
                }
                Ok(None) => st.device_drops += 1,
                Err(e) => {
                    tracing::warn!(
                        "offloading {victim} to RAM failed, dropping its device copy: {e}"
                    );
                    st.device_drops += 1;
                }
            }
            drop(st);
            drop(copy);
        }
    }

    /// Releases one lock; the last unlock of a stale entry evicts it.
    pub(crate) fn unlock(&self, key: &str) {
        let mut st = self.state();
        let tick = st.touch();
        let remove = match st.entries.get_mut(key) {
            Some(e) => {
                e.locks = e.locks.saturating_sub(1);
                e.last_used = tick;
                e.used_at = Instant::now();
                e.locks == 0 && e.stale
            }
            None => false,
        };
        if remove {
            st.entries.remove(key);
        }
    }

    /// Exempts `key` from the keep-alive (preloaded models); LRU eviction still applies.
    pub fn pin(&self, key: &str) {
        if let Some(e) = self.state().entries.get_mut(key) {
            e.pinned = true;
        }
    }

    /// Marks the entry under exactly `key` stale: evicted now if unlocked, else at its last
    /// unlock. Use it when a record's files or settings change.
    pub fn mark_stale(&self, key: &str) {
        let mut st = self.state();
        if !st.remove_if_unlocked(key)
            && let Some(e) = st.entries.get_mut(key)
        {
            e.stale = true;
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

    fn expire_locked(&self, st: &mut State, now: Instant) -> Vec<String> {
        let Some(ka) = self.inner.config.keep_alive else {
            return Vec::new();
        };
        let gone: Vec<String> = st
            .entries
            .iter()
            .filter(|(_, e)| e.locks == 0 && !e.pinned && now.duration_since(e.used_at) >= ka)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            st.entries.remove(k);
            st.expired += 1;
        }
        gone
    }

    /// Releases the unlocked, unpinned entries unused for the keep-alive (none when it is
    /// off); returns their keys. Lookups call it too, so a cache without
    /// [`spawn_keep_alive`](Self::spawn_keep_alive) still releases on its next use.
    pub fn expire(&self) -> Vec<String> {
        let mut st = self.state();
        self.expire_locked(&mut st, Instant::now())
    }

    /// When the next entry would expire (unlocked, unpinned entries only).
    fn next_expiry(&self) -> Option<Instant> {
        let ka = self.inner.config.keep_alive?;
        self.state()
            .entries
            .values()
            .filter(|e| e.locks == 0 && !e.pinned)
            .map(|e| e.used_at + ka)
            .min()
    }

    /// Starts the keep-alive task when the keep-alive is on, a tokio runtime is current and
    /// it is not running yet: a cache used inside a runtime (watch) releases expired entries
    /// on its own. Called by every load.
    fn ensure_keep_alive(&self) {
        if self.inner.config.keep_alive.is_some()
            && !self.inner.keep_alive_started.load(Ordering::Relaxed)
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let _ = self.spawn_keep_alive();
        }
    }

    /// Spawns the keep-alive task on the current tokio runtime: it sleeps until the next
    /// entry's expiry and releases what expired, until the cache is dropped. `None` when the
    /// keep-alive is off or its task was started already. Must be called inside a runtime.
    pub fn spawn_keep_alive(&self) -> Option<tokio::task::JoinHandle<()>> {
        let ka = self.inner.config.keep_alive?;
        if self.inner.keep_alive_started.swap(true, Ordering::Relaxed) {
            return None;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        Some(tokio::spawn(async move {
            loop {
                let next = {
                    let Some(inner) = weak.upgrade() else { return };
                    let cache = ModelCache { inner };
                    cache.next_expiry().unwrap_or_else(|| Instant::now() + ka)
                };
                tokio::time::sleep_until(next).await;
                let Some(inner) = weak.upgrade() else { return };
                let released = ModelCache { inner }.expire();
                if !released.is_empty() {
                    tracing::debug!("keep-alive released {}", released.join(", "));
                }
            }
        }))
    }

    /// Whether `key` is cached (does not count as a lookup).
    pub fn contains(&self, key: &str) -> bool {
        self.state().entries.contains_key(key)
    }

    /// Whether `key` has a copy on the execution device.
    pub fn is_on_device(&self, key: &str) -> bool {
        let exec = self.device();
        self.state()
            .entries
            .get(key)
            .and_then(|e| e.copy.as_ref())
            .is_some_and(|c| c.on == exec)
    }

    /// Whether `key`'s device copy sits offloaded in RAM.
    pub fn is_offloaded(&self, key: &str) -> bool {
        let exec = self.device();
        self.state()
            .entries
            .get(key)
            .and_then(|e| e.copy.as_ref())
            .is_some_and(|c| c.on == ExecDevice::Cpu && exec != ExecDevice::Cpu)
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
        let vram_limit = self.vram_limit();
        let st = self.state();
        let mut by_device: BTreeMap<String, u64> = BTreeMap::new();
        for e in st.entries.values() {
            *by_device.entry("cpu".into()).or_default() += e.host_bytes;
            if let Some(c) = &e.copy {
                *by_device.entry(c.on.to_string()).or_default() += c.bytes;
            }
        }
        CacheStats {
            hits: st.hits,
            misses: st.misses,
            loads: st.loads,
            evictions: st.evictions,
            offloads: st.offloads,
            device_drops: st.device_drops,
            expired: st.expired,
            bytes_moved: st.bytes_moved,
            entries: st.entries.len(),
            locked: st.entries.values().filter(|e| e.locks > 0).count(),
            pinned: st.entries.values().filter(|e| e.pinned).count(),
            ram_budget: self.inner.config.ram,
            vram_budget: self.inner.config.vram,
            vram_limit,
            vram_capacity: self.inner.backend.capacity(),
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
        assert!(belongs_to("ab@fp16", "ab"));
        assert_eq!(cache_key("k", Some(SubModelType::Vae)), "k:vae");
    }
}

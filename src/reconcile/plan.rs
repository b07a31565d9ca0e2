//! The plan: a pure function of the manifest, the inventory and options. No I/O.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use serde::Serialize;

use super::inventory::{DirState, FileStatus, Inventory, InventoryRecord};
use crate::manifest::{BrokenEntry, LockFile, Manifest, ModelEntry, SpecHash};
use crate::taxonomy::{ModelFormat, ModelType};

/// Inputs of [`plan`] besides the manifest and the inventory.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions<'a> {
    /// Delete managed records whose entries left the manifest (`--prune` or `settings.prune`).
    pub prune: bool,
    /// Take over an unmanaged record with the same canonical source instead of installing.
    pub adopt: bool,
    /// Only these entry names (`--only`); empty: all. Deletions are limited to them too.
    pub only: Vec<String>,
    /// The lock file, for resolved commits and file sizes.
    pub lock: Option<&'a LockFile>,
    /// `--refresh`: entry name → the commit its (unpinned) revision points at upstream now.
    pub upstream_commits: BTreeMap<String, String>,
    /// Entry name → bytes the entry would fetch, when the caller asked (hub metadata, or the
    /// size of a local source). Wins over the lock's sizes.
    pub remote_sizes: BTreeMap<String, u64>,
    /// Entry name → why the entry cannot be resolved (no such repo, revision, file or local
    /// path), from the caller's look-ups: the entry's row becomes an error with this reason.
    pub unresolvable: BTreeMap<String, String>,
    /// Entry name → what of its fetch is on this machine already (the store's files, the HF
    /// cache, `settings.adopt_from`), from the caller's look-up
    /// ([`super::remote::adoptable`]): those bytes are not fetched.
    pub adoptable: BTreeMap<String, Adoptable>,
    /// Free bytes on models_dir's file system, when the caller measured them.
    pub free_bytes: Option<u64>,
    /// Headroom the fetch needs besides the files themselves. Downloads stage in
    /// `models_dir/.tmp/` on the same file system and are renamed into place, so a finished
    /// file costs nothing extra; this covers what the caller wants kept free.
    pub staging_bytes: u64,
}

/// What of one entry's fetch is on this machine already.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Adoptable {
    /// Bytes found.
    pub bytes: u64,
    /// Files found.
    pub files: usize,
    /// Files the fetch has in all.
    pub of_files: usize,
    /// Bytes still to fetch, when the whole file list was known.
    pub rest: Option<u64>,
    /// Where, in words (`the HF cache`, a folder, `the store (model …)`), best first.
    pub from: Vec<String>,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// models_dir is missing or empty while the store has records in it.
    #[error(
        "models folder {} is {} but the store has {records} model(s) in it: is the volume mounted? Nothing was planned (no repair, no delete); mount it or point --models-dir at the right folder",
        models_dir.display(),
        if *.missing { "missing" } else { "empty" }
    )]
    VolumeNotMounted {
        /// The folder.
        models_dir: PathBuf,
        /// Missing (true) or empty (false).
        missing: bool,
        /// Records that live inside it.
        records: usize,
    },
    /// `--only` named entries the manifest does not have.
    #[error("--only: no entry named {} in the manifest", .0.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "))]
    UnknownEntries(Vec<String>),
}

/// What happens to one entry (or one managed record whose entry left).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// No record for the entry: fetch and install.
    Install,
    /// An unmanaged record with the same source becomes the entry's (no fetch).
    Adopt,
    /// Record, spec and files as wanted.
    Unchanged,
    /// Only record-level fields changed: rewrite the record (no fetch).
    Update,
    /// Source-level fields changed: install anew, then remove the old record and files.
    Replace,
    /// Files missing or changed: fetch them again (inplace: re-hash).
    Repair,
    /// The unpinned revision moved upstream: fetch the new commit.
    Upgrade,
    /// A managed record whose entry left the manifest, with prune: remove it and its files.
    Delete,
    /// The same without prune: reported, kept.
    Orphaned,
    /// Cannot converge without the user (an inplace source that vanished).
    Error,
}

impl ActionKind {
    /// Every kind, in declaration order.
    pub const ALL: [ActionKind; 10] = [
        Self::Install,
        Self::Adopt,
        Self::Unchanged,
        Self::Update,
        Self::Replace,
        Self::Repair,
        Self::Upgrade,
        Self::Delete,
        Self::Orphaned,
        Self::Error,
    ];

    /// The name, as JSON spells it (`install`, `repair` …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Install => "install",
            Self::Adopt => "adopt",
            Self::Unchanged => "unchanged",
            Self::Update => "update",
            Self::Replace => "replace",
            Self::Repair => "repair",
            Self::Upgrade => "upgrade",
            Self::Delete => "delete",
            Self::Orphaned => "orphaned",
            Self::Error => "error",
        }
    }

    /// The symbol in the diff table.
    pub const fn symbol(self) -> &'static str {
        match self {
            Self::Install => "+",
            Self::Adopt => "⇐",
            Self::Unchanged => "=",
            Self::Update => "~",
            Self::Replace => "-/+",
            Self::Repair => "!",
            Self::Upgrade => "↑",
            Self::Delete => "-",
            Self::Orphaned => "?",
            Self::Error => "✗",
        }
    }

    /// Whether `apply` would change something (what `diff --exit-code` reports as pending).
    pub const fn is_change(self) -> bool {
        !matches!(self, Self::Unchanged | Self::Orphaned | Self::Error)
    }
}

/// What happens to one entry or record, with the data only that kind has: every kind but
/// install names its record, a repair its damaged files; the entry's spec hash is there for
/// the entry's actions and absent for a record whose entry left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No record for the entry: fetch and install.
    Install {
        /// The spec hash the new record carries.
        spec_hash: String,
    },
    /// The unmanaged record `key` (same source) becomes the entry's.
    Adopt {
        /// The record taken over.
        key: String,
        /// The spec hash it carries afterwards.
        spec_hash: String,
    },
    /// Record, spec and files as wanted.
    Unchanged {
        /// The entry's record.
        key: String,
        /// Its spec hash.
        spec_hash: String,
    },
    /// Only record-level fields changed: rewrite the record.
    Update {
        /// The record rewritten.
        key: String,
        /// The spec hash it carries afterwards.
        spec_hash: String,
    },
    /// Source-level fields changed: install anew, then remove `key`.
    Replace {
        /// The record replaced.
        key: String,
        /// The new record's spec hash.
        spec_hash: String,
    },
    /// Files missing or changed: fetch them again (inplace: re-hash).
    Repair {
        /// The record repaired in place.
        key: String,
        /// The recorded files (relative paths) that are missing or changed; empty when the
        /// model's path itself is gone.
        files: Vec<String>,
        /// The spec hash it carries afterwards.
        spec_hash: String,
    },
    /// The unpinned revision moved upstream: fetch the new commit into `key`.
    Upgrade {
        /// The record upgraded in place.
        key: String,
        /// The spec hash it carries afterwards.
        spec_hash: String,
    },
    /// A managed record whose entry left the manifest, with prune: remove it and its files.
    Delete {
        /// The record removed.
        key: String,
    },
    /// The same without prune: reported, kept.
    Orphaned {
        /// The record kept.
        key: String,
    },
    /// Cannot converge without the user; the record (if any) stays as it is.
    Error {
        /// The entry's record, when it has one.
        key: Option<String>,
        /// The entry's spec hash (`None` for an entry that cannot be expanded).
        spec_hash: Option<String>,
    },
}

impl Step {
    /// The kind.
    pub const fn kind(&self) -> ActionKind {
        match self {
            Self::Install { .. } => ActionKind::Install,
            Self::Adopt { .. } => ActionKind::Adopt,
            Self::Unchanged { .. } => ActionKind::Unchanged,
            Self::Update { .. } => ActionKind::Update,
            Self::Replace { .. } => ActionKind::Replace,
            Self::Repair { .. } => ActionKind::Repair,
            Self::Upgrade { .. } => ActionKind::Upgrade,
            Self::Delete { .. } => ActionKind::Delete,
            Self::Orphaned { .. } => ActionKind::Orphaned,
            Self::Error { .. } => ActionKind::Error,
        }
    }

    /// The existing record involved (all but install and some errors).
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Install { .. } => None,
            Self::Adopt { key, .. }
            | Self::Unchanged { key, .. }
            | Self::Update { key, .. }
            | Self::Replace { key, .. }
            | Self::Repair { key, .. }
            | Self::Upgrade { key, .. }
            | Self::Delete { key }
            | Self::Orphaned { key } => Some(key),
            Self::Error { key, .. } => key.as_deref(),
        }
    }

    /// The spec hash the record must carry afterwards (`None` for delete/orphaned and for
    /// entries that cannot be expanded).
    pub fn spec_hash(&self) -> Option<&str> {
        match self {
            Self::Install { spec_hash }
            | Self::Adopt { spec_hash, .. }
            | Self::Unchanged { spec_hash, .. }
            | Self::Update { spec_hash, .. }
            | Self::Replace { spec_hash, .. }
            | Self::Repair { spec_hash, .. }
            | Self::Upgrade { spec_hash, .. } => Some(spec_hash),
            Self::Delete { .. } | Self::Orphaned { .. } => None,
            Self::Error { spec_hash, .. } => spec_hash.as_deref(),
        }
    }

    /// A repair's damaged files; empty for every other kind.
    pub fn files(&self) -> &[String] {
        match self {
            Self::Repair { files, .. } => files,
            _ => &[],
        }
    }

    /// The record of a delete or orphaned row (a record whose entry left, or another record
    /// of a present entry).
    pub fn leftover_key(&self) -> Option<&str> {
        match self {
            Self::Delete { key } | Self::Orphaned { key } => Some(key),
            _ => None,
        }
    }
}

/// One line of the plan.
///
/// Serialised flat, the same row for every kind (see [`Plan`]): `action`, `name`, `source`,
/// `key` (`null` when none), `reason`, `fetch_bytes`, `files` (`[]` but for a repair),
/// `spec_hash` (`null` for delete/orphaned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedAction {
    /// What happens, with the data of that kind.
    pub step: Step,
    /// The entry name (for delete/orphaned: the entry that once owned the record).
    pub name: String,
    /// The canonical source: the entry's, or for delete/orphaned the record's.
    pub source: String,
    /// Why, in words.
    pub reason: String,
    /// Bytes to fetch; `None`: unknown (no lock entry and no hub metadata).
    pub fetch_bytes: Option<u64>,
    /// Bytes the action takes from this machine instead of fetching them (not counted in
    /// `fetch_bytes`; serialised only when not zero).
    pub adopt_bytes: u64,
}

impl PlannedAction {
    /// The kind.
    pub const fn kind(&self) -> ActionKind {
        self.step.kind()
    }

    /// The existing record involved.
    pub fn key(&self) -> Option<&str> {
        self.step.key()
    }

    /// A repair's damaged files; empty for every other kind.
    pub fn files(&self) -> &[String] {
        self.step.files()
    }

    /// The spec hash the record must carry afterwards.
    pub fn spec_hash(&self) -> Option<&str> {
        self.step.spec_hash()
    }

    /// Turns the row into an error saying `reason`: nothing is fetched, the record (if any)
    /// stays as it is.
    fn fail(&mut self, reason: String) {
        self.step = Step::Error {
            key: self.key().map(str::to_owned),
            spec_hash: self.spec_hash().map(str::to_owned),
        };
        self.reason = reason;
        self.fetch_bytes = Some(0);
    }
}

impl Serialize for PlannedAction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        /// The wire row, fields in the documented order.
        #[derive(Serialize)]
        struct Row<'a> {
            action: ActionKind,
            name: &'a str,
            source: &'a str,
            key: Option<&'a str>,
            reason: &'a str,
            fetch_bytes: Option<u64>,
            files: &'a [String],
            #[serde(skip_serializing_if = "is_zero")]
            adopt_bytes: u64,
            spec_hash: Option<&'a str>,
        }
        Row {
            action: self.kind(),
            name: &self.name,
            source: &self.source,
            key: self.key(),
            reason: &self.reason,
            fetch_bytes: self.fetch_bytes,
            files: self.files(),
            adopt_bytes: self.adopt_bytes,
            spec_hash: self.spec_hash(),
        }
        .serialize(s)
    }
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A record no manifest entry owns (from `import`): listed, never touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnmanagedRecord {
    /// Record key.
    pub key: String,
    /// Record name.
    pub name: String,
    /// Its source.
    pub source: String,
    /// Its stored path.
    pub path: String,
}

/// A record no probe rule identified (type `unknown`): it syncs, but `load` refuses it until
/// its entry says what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnidentifiedRecord {
    /// Record key.
    pub key: String,
    /// Record name.
    pub name: String,
    /// The entry that owns it (`None`: unmanaged).
    pub entry: Option<String>,
    /// Its format, as the files say (`checkpoint`, `diffusers` …).
    pub format: ModelFormat,
    /// How to identify it.
    pub hint: &'static str,
}

/// Counts per action and bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Entries to install.
    pub install: usize,
    /// Records to adopt.
    pub adopt: usize,
    /// Entries in sync.
    pub unchanged: usize,
    /// Records to update.
    pub update: usize,
    /// Entries to replace.
    pub replace: usize,
    /// Entries to repair.
    pub repair: usize,
    /// Entries to upgrade.
    pub upgrade: usize,
    /// Records to delete.
    pub delete: usize,
    /// Records orphaned (kept).
    pub orphaned: usize,
    /// Entries that cannot converge.
    pub error: usize,
    /// Unmanaged records.
    pub unmanaged: usize,
    /// Bytes to fetch, over the actions whose size is known.
    pub fetch_bytes: u64,
    /// Fetching actions whose size is unknown.
    pub unknown_sizes: usize,
}

impl Totals {
    fn count(&mut self, a: &PlannedAction) {
        let slot = match a.kind() {
            ActionKind::Install => &mut self.install,
            ActionKind::Adopt => &mut self.adopt,
            ActionKind::Unchanged => &mut self.unchanged,
            ActionKind::Update => &mut self.update,
            ActionKind::Replace => &mut self.replace,
            ActionKind::Repair => &mut self.repair,
            ActionKind::Upgrade => &mut self.upgrade,
            ActionKind::Delete => &mut self.delete,
            ActionKind::Orphaned => &mut self.orphaned,
            ActionKind::Error => &mut self.error,
        };
        *slot += 1;
        match a.fetch_bytes {
            Some(b) => self.fetch_bytes = self.fetch_bytes.saturating_add(b),
            None => self.unknown_sizes += 1,
        }
    }
}

/// The free-disk check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskCheck {
    /// Free bytes on models_dir's file system, when measured.
    pub free_bytes: Option<u64>,
    /// Known bytes to fetch plus staging headroom (0 when nothing is fetched).
    pub required_bytes: u64,
    /// False when `required_bytes` exceeds `free_bytes` (CLI exit 3). True when free space
    /// was not measured. Sizes that are unknown are not counted.
    pub fits: bool,
}

/// What `apply` would do: one action per manifest entry (in manifest order), then the
/// managed records whose entries left (by name), plus the unmanaged records, totals and the
/// free-disk check.
///
/// `-o json` prints this with serde; the shape is stable:
///
/// ```json
/// {
///   "actions": [
///     {"action": "install", "name": "sd15", "source": "runwayml/stable-diffusion-v1-5:fp16",
///      "key": null, "reason": "not installed", "fetch_bytes": 2132856404, "files": [],
///      "spec_hash": "src:…;rec:…"},
///     {"action": "repair", "name": "vae", "source": "…", "key": "3f2a…",
///      "reason": "1 file missing", "fetch_bytes": 334643238,
///      "files": ["diffusion_pytorch_model.safetensors"], "spec_hash": "src:…;rec:…"},
///     {"action": "orphaned", "name": "old", "source": "…", "key": "9c1e…",
///      "reason": "entry `old` left the manifest; kept (apply --prune deletes it)",
///      "fetch_bytes": 0, "files": [], "spec_hash": null}
///   ],
///   "unmanaged": [{"key": "…", "name": "myvae", "source": "/x/vae.safetensors", "path": "…"}],
///   "unidentified": [{"key": "…", "name": "t5", "entry": "t5", "format": "checkpoint",
///                     "hint": "set `config: {type: …, base: …}` on its manifest entry …"}],
///   "totals": {"install": 1, "adopt": 0, "unchanged": 0, "update": 0, "replace": 0,
///              "repair": 1, "upgrade": 0, "delete": 0, "orphaned": 1, "error": 0,
///              "unmanaged": 1, "fetch_bytes": 2467499642, "unknown_sizes": 0},
///   "disk": {"free_bytes": 61000000000, "required_bytes": 2467499642, "fits": true}
/// }
/// ```
///
/// `action` is one of `install`, `adopt`, `unchanged`, `update`, `replace`, `repair`,
/// `upgrade`, `delete`, `orphaned`, `error`; `fetch_bytes` is `null` when unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Entry actions in manifest order, then delete/orphaned by name.
    pub actions: Vec<PlannedAction>,
    /// Records no entry owns.
    pub unmanaged: Vec<UnmanagedRecord>,
    /// Records of type `unknown` (managed or not): in sync, but not loadable.
    pub unidentified: Vec<UnidentifiedRecord>,
    /// Counts and bytes.
    pub totals: Totals,
    /// Free-disk check.
    pub disk: DiskCheck,
}

impl Plan {
    /// Whether `apply` would change anything.
    pub fn has_changes(&self) -> bool {
        self.actions.iter().any(|a| a.kind().is_change())
    }

    /// Whether some entry cannot converge.
    pub fn has_errors(&self) -> bool {
        self.totals.error > 0
    }

    /// Whether the fetch fits on disk.
    pub fn fits(&self) -> bool {
        self.disk.fits
    }

    /// The disk gate, per entry: when the whole fetch does not fit, the fetching actions are
    /// taken in plan order while their known sizes fit in the free bytes (less the staging
    /// headroom), and each one that no longer fits becomes an error row saying so; the others
    /// go ahead. Actions of unknown size are let through (the download's own space check
    /// stops them). Returns the names refused; nothing when the plan fits or free space was
    /// not measured.
    ///
    /// Plan order, not the best packing: it is the order the user wrote, so which entries get
    /// in is predictable, and a later run installs the rest once space is freed.
    pub fn refuse_what_does_not_fit(&mut self) -> Vec<String> {
        let Some(free) = self.disk.free_bytes else {
            return Vec::new();
        };
        if self.disk.fits {
            return Vec::new();
        }
        let staging = self
            .disk
            .required_bytes
            .saturating_sub(self.totals.fetch_bytes);
        let mut left = free.saturating_sub(staging);
        let mut refused = Vec::new();
        for a in &mut self.actions {
            let Some(bytes) = a.fetch_bytes.filter(|b| *b > 0) else {
                continue;
            };
            if !a.kind().is_change() {
                continue;
            }
            if bytes <= left {
                left -= bytes;
                continue;
            }
            a.fail(format!(
                "does not fit on disk: needs {}, {} left for it (of {} free)",
                crate::units::HumanBytes(bytes),
                crate::units::HumanBytes(left),
                crate::units::HumanBytes(free)
            ));
            refused.push(a.name.clone());
        }
        let mut totals = Totals {
            unmanaged: self.totals.unmanaged,
            ..Totals::default()
        };
        for a in &self.actions {
            totals.count(a);
        }
        self.totals = totals;
        refused
    }

    /// The action for an entry name.
    pub fn action(&self, name: &str) -> Option<&PlannedAction> {
        self.actions.iter().find(|a| a.name == name)
    }

    /// The actions that change something, in plan order.
    pub fn changes(&self) -> impl Iterator<Item = &PlannedAction> {
        self.actions.iter().filter(|a| a.kind().is_change())
    }
}

/// Plans: compares each manifest entry with the records the inventory holds.
///
/// Per entry, in this order of precedence: no managed record → install (or adopt, with
/// `opts.adopt`, an intact unmanaged record whose source equals the entry's canonical
/// source); source-level spec changed → replace; an inplace source gone → error; the unpinned
/// revision moved (`opts.upstream_commits` vs the lock's resolved commit) → upgrade; files
/// missing or changed → repair; record-level spec changed → update; else unchanged. Managed
/// records whose entries left → delete with `opts.prune`, else orphaned.
///
/// Refuses to plan at all when models_dir is missing or empty while the store has records in
/// it (an unmounted volume), so nothing is repaired or deleted in that state.
pub fn plan(
    manifest: &Manifest,
    inventory: &Inventory,
    opts: &PlanOptions<'_>,
) -> Result<Plan, PlanError> {
    if inventory.volume_suspect() {
        return Err(PlanError::VolumeNotMounted {
            models_dir: inventory.models_dir.clone(),
            missing: inventory.models_dir_state == DirState::Missing,
            records: inventory.records.iter().filter(|r| r.in_models_dir).count(),
        });
    }
    // The entries in the manifest, as far as this plan looks: with `only`, those of its names
    // that exist (no set of every name is built for a one-entry plan).
    let names: HashSet<&str> = if opts.only.is_empty() {
        manifest
            .models
            .iter()
            .map(|e| e.name.as_str())
            .chain(manifest.broken.iter().map(|b| b.name.as_str()))
            .collect()
    } else {
        opts.only
            .iter()
            .map(String::as_str)
            .filter(|n| manifest.has_entry(n))
            .collect()
    };
    let unknown: Vec<String> = opts
        .only
        .iter()
        .filter(|n| !names.contains(n.as_str()))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(PlanError::UnknownEntries(unknown));
    }
    let only: HashSet<&str> = opts.only.iter().map(String::as_str).collect();
    let selected = |name: &str| only.is_empty() || only.contains(name);

    let mut managed: HashMap<&str, Vec<&InventoryRecord>> = HashMap::new();
    let mut unmanaged_by_source: HashMap<&str, Vec<&InventoryRecord>> = HashMap::new();
    for r in &inventory.records {
        match r.entry() {
            Some(entry) => managed.entry(entry).or_default().push(r),
            None => unmanaged_by_source
                .entry(r.source.as_str())
                .or_default()
                .push(r),
        }
    }

    let mut actions = Vec::with_capacity(manifest.models.len() + manifest.broken.len());
    let mut extra = Vec::new();
    let mut adopted: HashSet<&str> = HashSet::new();
    // Entries that cannot be expanded are rows of their own, in file order with the others.
    let mut broken: Vec<&BrokenEntry> = manifest
        .broken
        .iter()
        .filter(|b| selected(&b.name))
        .collect();
    broken.reverse();
    for entry in manifest.models.iter().filter(|e| selected(&e.name)) {
        while broken.last().is_some_and(|b| b.loc.line < entry.loc.line) {
            actions.extend(broken.pop().map(|b| broken_row(b, &managed)));
        }
        let records = managed
            .get(entry.name.as_str())
            .map_or(&[][..], Vec::as_slice);
        // Several records claiming one entry (an interrupted replace): keep the best one, the
        // others go the way of records whose entry left.
        let primary = records
            .iter()
            .copied()
            .max_by_key(|r| (spec_matches(r, entry), r.is_intact()));
        for r in records {
            if primary.is_some_and(|p| p.key != r.key) {
                extra.push(leftover(
                    r,
                    opts.prune,
                    &format!("another record of entry `{}`", entry.name),
                ));
            }
        }
        let mut action = match primary {
            Some(r) => plan_existing(entry, r, opts),
            None => plan_new(entry, &unmanaged_by_source, &mut adopted, opts),
        };
        if let Some(found) = opts.adoptable.get(&entry.name) {
            take_adoptable(&mut action, found);
        }
        if let Some(why) = opts.unresolvable.get(&entry.name)
            && action.kind() != ActionKind::Adopt
        {
            action.fail(why.clone());
        }
        actions.push(action);
    }
    while let Some(b) = broken.pop() {
        actions.push(broken_row(b, &managed));
    }
    let mut gone: Vec<&InventoryRecord> = inventory
        .records
        .iter()
        .filter(|r| r.entry().is_some_and(|e| !names.contains(e) && selected(e)))
        .collect();
    gone.sort_by(|a, b| (a.entry(), &a.key).cmp(&(b.entry(), &b.key)));
    for r in gone {
        let entry = r.entry().unwrap_or_default();
        extra.push(leftover(
            r,
            opts.prune,
            &format!("entry `{entry}` left the manifest"),
        ));
    }
    actions.extend(extra);

    let unmanaged: Vec<UnmanagedRecord> = inventory
        .records
        .iter()
        .filter(|r| r.managed.is_none() && !adopted.contains(r.key.as_str()))
        .map(|r| UnmanagedRecord {
            key: r.key.clone(),
            name: r.name.clone(),
            source: r.source.clone(),
            path: r.path.clone(),
        })
        .collect();

    let mut totals = Totals {
        unmanaged: unmanaged.len(),
        ..Totals::default()
    };
    for a in &actions {
        totals.count(a);
    }
    let required_bytes = if totals.fetch_bytes == 0 {
        0
    } else {
        totals.fetch_bytes.saturating_add(opts.staging_bytes)
    };
    let disk = DiskCheck {
        free_bytes: opts.free_bytes,
        required_bytes,
        fits: opts.free_bytes.is_none_or(|f| required_bytes <= f),
    };
    let unidentified = unidentified_records(inventory);
    Ok(Plan {
        actions,
        unmanaged,
        unidentified,
        totals,
        disk,
    })
}

/// The error row of an entry that cannot be expanded; its record (if any) stays as it is.
fn broken_row(b: &BrokenEntry, managed: &HashMap<&str, Vec<&InventoryRecord>>) -> PlannedAction {
    PlannedAction {
        step: Step::Error {
            key: managed
                .get(b.name.as_str())
                .and_then(|rs| rs.iter().find(|r| r.is_intact()).or(rs.first()))
                .map(|r| r.key.clone()),
            spec_hash: None,
        },
        name: b.name.clone(),
        source: b.source.clone(),
        reason: b.reason.clone(),
        fetch_bytes: Some(0),
        adopt_bytes: 0,
    }
}

fn spec_matches(r: &InventoryRecord, e: &ModelEntry) -> bool {
    r.managed
        .as_ref()
        .and_then(|m| SpecHash::parse(&m.spec_hash))
        .is_some_and(|s| s.source == e.spec_hash.source)
}

/// An entry's row: `step` built from the entry's spec hash; nothing fetched unless the caller
/// says so.
fn action(
    entry: &ModelEntry,
    step: impl FnOnce(String) -> Step,
    reason: impl Into<String>,
) -> PlannedAction {
    PlannedAction {
        step: step(entry.spec_hash.to_string()),
        name: entry.name.clone(),
        source: entry.canonical_source(),
        reason: reason.into(),
        fetch_bytes: Some(0),
        adopt_bytes: 0,
    }
}

/// A fetching action takes what is on this machine already: fewer bytes to fetch, and the
/// reason says from where — "adopt from the HF cache (2.1 GB, no download)", or "adopt 2 of 5
/// files from …" when only some are there.
fn take_adoptable(a: &mut PlannedAction, found: &Adoptable) {
    let fetches = matches!(
        a.kind(),
        ActionKind::Install | ActionKind::Replace | ActionKind::Repair | ActionKind::Upgrade
    );
    if !fetches || found.files == 0 || a.fetch_bytes == Some(0) {
        return;
    }
    a.adopt_bytes = found.bytes;
    a.fetch_bytes = found
        .rest
        .or_else(|| a.fetch_bytes.map(|b| b.saturating_sub(found.bytes)));
    let which = if found.files == found.of_files {
        String::new()
    } else {
        format!(" {} of {} files", found.files, found.of_files)
    };
    let from = found
        .from
        .first()
        .map_or_else(|| "this machine".to_owned(), Clone::clone);
    let more = if found.from.len() > 1 {
        " and elsewhere"
    } else {
        ""
    };
    a.reason = format!(
        "{}; adopt{which} from {from}{more} ({}, no download)",
        a.reason,
        crate::units::HumanBytes(found.bytes)
    );
}

/// Bytes the entry would fetch in full: the caller's measurement, else the lock's sizes (when
/// the lock was written for this source), else zero for an inplace source, else unknown.
fn full_size(entry: &ModelEntry, opts: &PlanOptions<'_>) -> Option<u64> {
    if entry.inplace {
        return Some(0);
    }
    opts.remote_sizes.get(&entry.name).copied().or_else(|| {
        opts.lock
            .and_then(|l| l.entry_for(entry))
            .map(crate::manifest::LockEntry::total_size)
    })
}

fn plan_new<'r>(
    entry: &ModelEntry,
    unmanaged: &HashMap<&str, Vec<&'r InventoryRecord>>,
    adopted: &mut HashSet<&'r str>,
    opts: &PlanOptions<'_>,
) -> PlannedAction {
    let canonical = entry.canonical_source();
    let candidate = unmanaged.get(canonical.as_str()).and_then(|rs| {
        rs.iter()
            .find(|r| r.is_intact() && !adopted.contains(r.key.as_str()))
    });
    let install = |spec_hash| Step::Install { spec_hash };
    if let Some(r) = candidate {
        if opts.adopt {
            adopted.insert(r.key.as_str());
            let key = r.key.clone();
            return action(
                entry,
                |spec_hash| Step::Adopt { key, spec_hash },
                format!(
                    "unmanaged record `{}` has the same source; taking it over",
                    r.name
                ),
            );
        }
        let mut a = action(
            entry,
            install,
            format!(
                "not installed (unmanaged record `{}` has the same source; --adopt takes it over)",
                r.name
            ),
        );
        a.fetch_bytes = full_size(entry, opts);
        return a;
    }
    let mut a = action(entry, install, "not installed");
    a.fetch_bytes = full_size(entry, opts);
    a
}

fn plan_existing(entry: &ModelEntry, r: &InventoryRecord, opts: &PlanOptions<'_>) -> PlannedAction {
    let key = || r.key.clone();
    let replace = |spec_hash| Step::Replace {
        key: key(),
        spec_hash,
    };
    let stored = r
        .managed
        .as_ref()
        .and_then(|m| SpecHash::parse(&m.spec_hash));
    let Some(stored) = stored else {
        let mut a = action(
            entry,
            replace,
            "the record's spec hash is unreadable (written by another version?)",
        );
        a.fetch_bytes = full_size(entry, opts);
        return a;
    };
    let canonical = entry.canonical_source();
    if stored.source != entry.spec_hash.source {
        let reason = if r.source == canonical {
            "source options changed (include, exclude, dest, hash, inplace or unsafe_pickle)"
                .to_owned()
        } else {
            format!("source changed: {} → {canonical}", r.source)
        };
        let mut a = action(entry, replace, reason);
        a.fetch_bytes = full_size(entry, opts);
        return a;
    }
    let missing: Vec<&str> = r
        .missing_files()
        .map(|f| f.recorded.relative_path.as_str())
        .collect();
    let changed: Vec<&str> = r
        .changed_files()
        .map(|f| f.recorded.relative_path.as_str())
        .collect();
    if entry.inplace && !r.path_exists {
        return action(
            entry,
            |spec_hash| Step::Error {
                key: Some(key()),
                spec_hash: Some(spec_hash),
            },
            format!(
                "inplace source {} is gone: restore it or remove the entry",
                r.resolved_path.display()
            ),
        );
    }
    let damage = damage_words(r, missing.len(), changed.len());
    if !entry.is_pinned()
        && let Some(now) = opts.upstream_commits.get(&entry.name)
    {
        let locked = opts
            .lock
            .and_then(|l| l.entry_for(entry))
            .and_then(|l| l.resolved_commit.as_deref());
        if locked != Some(now.as_str()) {
            let rev = entry.moving_ref();
            let mut reason = match locked {
                Some(old) => format!("{rev} moved upstream: {} → {}", short(old), short(now)),
                None => format!(
                    "{rev} is at {} upstream; the installed commit is unknown (no lock entry)",
                    short(now)
                ),
            };
            if let Some(d) = &damage {
                reason.push_str("; also ");
                reason.push_str(d);
            }
            let mut a = action(
                entry,
                |spec_hash| Step::Upgrade {
                    key: key(),
                    spec_hash,
                },
                reason,
            );
            a.fetch_bytes = opts.remote_sizes.get(&entry.name).copied();
            return a;
        }
    }
    if let Some(mut d) = damage {
        let files = missing
            .iter()
            .chain(&changed)
            .map(|s| (*s).to_owned())
            .collect();
        if entry.inplace {
            d.push_str(" (inplace: re-hash, nothing to fetch)");
        }
        let mut a = action(
            entry,
            |spec_hash| Step::Repair {
                key: key(),
                files,
                spec_hash,
            },
            d,
        );
        a.fetch_bytes = if entry.inplace {
            Some(0)
        } else if r.files.is_empty() {
            full_size(entry, opts).or(Some(r.file_size))
        } else {
            Some(
                r.files
                    .iter()
                    .filter(|f| f.status != FileStatus::Ok)
                    .map(|f| f.recorded.size)
                    .sum(),
            )
        };
        return a;
    }
    if stored.record != entry.spec_hash.record {
        let changed = changed_fields(entry, r);
        let reason = if changed.is_empty() {
            // Nothing the record shows differs: `preload`, or a config override that was
            // removed (the record keeps its value until rewritten).
            "record-level fields changed (preload or a removed config override)".to_owned()
        } else {
            format!("{} changed", changed.join(", "))
        };
        return action(
            entry,
            |spec_hash| Step::Update {
                key: key(),
                spec_hash,
            },
            reason,
        );
    }
    action(
        entry,
        |spec_hash| Step::Unchanged {
            key: key(),
            spec_hash,
        },
        "in sync",
    )
}

/// The record-level fields whose values the record does not have: `name`, `description`,
/// `tags` (the manifest's plus the source's), `config.<key>` per override, in that order.
fn changed_fields(entry: &ModelEntry, r: &InventoryRecord) -> Vec<String> {
    let rec = &r.fields;
    let text = |k: &str| rec.get(k).and_then(serde_json::Value::as_str);
    let mut out = Vec::new();
    if text("name") != Some(entry.name.as_str()) {
        out.push("name".to_owned());
    }
    if text("description") != entry.description.as_deref() {
        out.push("description".to_owned());
    }
    let have: HashSet<&str> = rec
        .get("tags")
        .and_then(serde_json::Value::as_array)
        .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    let want: HashSet<&str> = r
        .source_tags
        .iter()
        .chain(&entry.tags)
        .map(String::as_str)
        .collect();
    if have != want {
        out.push("tags".to_owned());
    }
    if let Ok(serde_json::Value::Object(overrides)) = serde_json::to_value(&entry.config) {
        for (k, v) in overrides {
            let differs = if v.is_null() {
                rec.get(&k).is_some_and(|x| !x.is_null())
            } else {
                rec.get(&k) != Some(&v)
            };
            if differs {
                out.push(format!("config.{k}"));
            }
        }
    }
    out
}

/// "2 files missing, 1 changed", "model path missing", or `None` when intact.
fn damage_words(r: &InventoryRecord, missing: usize, changed: usize) -> Option<String> {
    let files = |n: usize| if n == 1 { "file" } else { "files" };
    match (missing, changed) {
        (0, 0) if r.path_exists => None,
        (0, 0) => Some(format!("model path {} missing", r.resolved_path.display())),
        (m, 0) => Some(format!("{m} {} missing", files(m))),
        (0, c) => Some(format!("{c} {} changed", files(c))),
        (m, c) => Some(format!("{m} {} missing, {c} changed", files(m))),
    }
}

fn leftover(r: &InventoryRecord, prune: bool, why: &str) -> PlannedAction {
    let key = r.key.clone();
    let (step, reason) = if prune {
        (Step::Delete { key }, why.to_owned())
    } else {
        (
            Step::Orphaned { key },
            format!("{why}; kept (apply --prune deletes it)"),
        )
    };
    PlannedAction {
        step,
        name: r.entry().unwrap_or(&r.name).to_owned(),
        source: r.source.clone(),
        reason,
        fetch_bytes: Some(0),
        adopt_bytes: 0,
    }
}

fn short(commit: &str) -> &str {
    // `sha256:` digests show their first 12 hex digits, as `docker images` does.
    match commit.strip_prefix("sha256:") {
        Some(hex) => hex.get(..12).unwrap_or(hex),
        None => commit.get(..7).unwrap_or(commit),
    }
}

/// The records of type `unknown`, by name.
pub fn unidentified_records(inventory: &Inventory) -> Vec<UnidentifiedRecord> {
    let mut v: Vec<UnidentifiedRecord> = inventory
        .records
        .iter()
        .filter(|r| r.model_type == ModelType::Unknown)
        .map(|r| UnidentifiedRecord {
            key: r.key.clone(),
            name: r.name.clone(),
            entry: r.entry().map(str::to_owned),
            format: r.format,
            hint: crate::config::IDENTIFY_HINT,
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name).then(a.key.cmp(&b.key)));
    v
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Managed;
    use crate::reconcile::inventory::FileState;
    use crate::store::ModelFile;

    fn manifest() -> Manifest {
        crate::manifest::parse_str(
            "version: 1\nmodels:\n  - name: same\n    source: o/same\n  - name: new\n    source: o/new\n  - name: hurt\n    source: o/hurt\n",
            Path::new("/p/models.yaml"),
            &|_| None,
        )
        .unwrap()
    }

    fn record(key: &str, entry: &str, spec_hash: String) -> InventoryRecord {
        let file = |rel: &str| FileState {
            recorded: ModelFile {
                relative_path: rel.into(),
                size: 10,
                mtime_ns: 1,
                sha256: None,
            },
            status: FileStatus::Ok,
        };
        InventoryRecord {
            key: key.into(),
            name: entry.into(),
            model_type: ModelType::Lora,
            format: ModelFormat::Lycoris,
            managed: Some(Managed {
                entry: entry.into(),
                spec_hash,
            }),
            source: format!("o/{entry}"),
            source_type: crate::config::ModelSourceType::HfRepoId,
            path: key.into(),
            resolved_path: Path::new("/srv/models").join(key),
            in_models_dir: true,
            path_exists: true,
            hash: "blake3:00".into(),
            file_size: 20,
            files: vec![file("a.safetensors"), file("b.safetensors")],
            fields: serde_json::json!({"name": entry, "tags": []})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            source_tags: Vec::new(),
        }
    }

    /// `same` in sync, `new` not installed, `hurt` with a file missing, and the record of an
    /// entry that left.
    fn inventory(m: &Manifest) -> Inventory {
        let spec = |n: &str| m.entry(n).unwrap().spec_hash.to_string();
        let mut hurt = record("k-hurt", "hurt", spec("hurt"));
        hurt.files[1].status = FileStatus::Missing;
        Inventory {
            models_dir: "/srv/models".into(),
            models_dir_state: DirState::Present,
            records: vec![
                record("k-same", "same", spec("same")),
                hurt,
                record("k-gone", "gone", "src:x;rec:y".into()),
            ],
        }
    }

    #[test]
    fn each_step_carries_the_data_of_its_kind() {
        let m = manifest();
        let spec = |n: &str| m.entry(n).unwrap().spec_hash.to_string();
        let opts = PlanOptions {
            prune: true,
            ..PlanOptions::default()
        };
        let p = plan(&m, &inventory(&m), &opts).unwrap();
        let step = |n: &str| p.action(n).unwrap().step.clone();
        assert_eq!(
            step("same"),
            Step::Unchanged {
                key: "k-same".into(),
                spec_hash: spec("same")
            }
        );
        assert_eq!(
            step("new"),
            Step::Install {
                spec_hash: spec("new")
            }
        );
        assert_eq!(
            step("hurt"),
            Step::Repair {
                key: "k-hurt".into(),
                files: vec!["b.safetensors".into()],
                spec_hash: spec("hurt")
            }
        );
        assert_eq!(
            step("gone"),
            Step::Delete {
                key: "k-gone".into()
            }
        );
        let gone = p.action("gone").unwrap();
        assert_eq!(
            (gone.kind(), gone.key(), gone.spec_hash(), gone.files()),
            (ActionKind::Delete, Some("k-gone"), None, &[][..])
        );
        assert_eq!(gone.step.leftover_key(), Some("k-gone"));
        assert_eq!(p.action("hurt").unwrap().step.leftover_key(), None);
        let p = plan(&m, &inventory(&m), &PlanOptions::default()).unwrap();
        assert_eq!(
            step_of(&p, "gone"),
            Step::Orphaned {
                key: "k-gone".into()
            }
        );
    }

    fn step_of(p: &Plan, name: &str) -> Step {
        p.action(name).unwrap().step.clone()
    }

    /// A row that becomes an error (unresolvable, or refused for space) keeps its record and
    /// spec hash, fetches nothing and names no files.
    #[test]
    fn an_error_row_keeps_the_record_and_drops_the_rest() {
        let m = manifest();
        let spec = |n: &str| m.entry(n).unwrap().spec_hash.to_string();
        let opts = PlanOptions {
            unresolvable: BTreeMap::from([("hurt".to_owned(), "no such repo".to_owned())]),
            ..PlanOptions::default()
        };
        let p = plan(&m, &inventory(&m), &opts).unwrap();
        let hurt = p.action("hurt").unwrap();
        assert_eq!(
            hurt.step,
            Step::Error {
                key: Some("k-hurt".into()),
                spec_hash: Some(spec("hurt"))
            }
        );
        assert_eq!(
            (hurt.reason.as_str(), hurt.fetch_bytes),
            ("no such repo", Some(0))
        );

        let opts = PlanOptions {
            free_bytes: Some(5),
            ..PlanOptions::default()
        };
        let mut p = plan(&m, &inventory(&m), &opts).unwrap();
        assert_eq!(p.refuse_what_does_not_fit(), ["hurt"]);
        assert_eq!(
            step_of(&p, "hurt"),
            Step::Error {
                key: Some("k-hurt".into()),
                spec_hash: Some(spec("hurt"))
            }
        );
        assert!(p.action("hurt").unwrap().files().is_empty());
        assert_eq!((p.totals.repair, p.totals.error), (0, 1));
    }
}

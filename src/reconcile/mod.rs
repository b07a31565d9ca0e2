//! The reconciler: observe what is there ([`inventory`]), decide what to do ([`plan`], pure),
//! show it ([`render`]), converge ([`apply`](mod@apply)), and report drift ([`status`]),
//! content damage ([`verify`]) and garbage ([`gc`]). Issue #6.
//!
//! ```no_run
//! use modelsync::{manifest, reconcile, store};
//! let m = manifest::load(std::path::Path::new("models.yaml"))?;
//! let store = store::open(&m.settings.database_path())?;
//! let inv = reconcile::observe(store.as_ref(), &m.settings.models_dir)?;
//! let lock = manifest::LockFile::read(&m.lock_path())?;
//! let opts = reconcile::PlanOptions { lock: lock.as_ref(), ..Default::default() };
//! let plan = reconcile::plan(&m, &inv, &opts)?;
//! print!("{}", reconcile::render_text(&plan, false));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod apply;
pub mod converge;
pub mod gc;
pub mod held_lock;
pub mod inventory;
pub mod plan;
pub mod remote;
pub mod render;
pub mod status;
pub mod verify;

pub use apply::{
    ActionResult, ApplyContext, ApplyError, ApplyOptions, ApplyReport, Preloader, ReconcileEvent,
    apply, check_volume, install_request, prune_departed, survey,
};
pub use converge::{ConvergeError, ManifestConverger, Services, SettingsChanged};
pub use held_lock::HeldLock;
pub use inventory::{
    DirState, FileState, FileStatus, Inventory, InventoryError, InventoryRecord, observe,
    observe_scope,
};
pub use plan::{
    ActionKind, Adoptable, DiskCheck, Plan, PlanError, PlanOptions, PlannedAction, Step, Totals,
    UnidentifiedRecord, UnmanagedRecord, plan, unidentified_records,
};
pub use remote::RemoteWarning;
pub use render::{render_text, render_unidentified};

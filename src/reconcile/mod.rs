//! The reconciler: observe what is there ([`inventory`]), decide what to do ([`plan`], pure),
//! and show it ([`render`]). Executing a plan (`apply`) and the drift report (`status`) build
//! on these. Issue #6.
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

pub mod inventory;
pub mod plan;
pub mod render;

pub use inventory::{
    DirState, FileState, FileStatus, Inventory, InventoryError, InventoryRecord, observe,
};
pub use plan::{
    ActionKind, DiskCheck, Plan, PlanError, PlanOptions, PlannedAction, Totals, UnmanagedRecord,
    plan,
};
pub use render::render_text;

/// A reconciler event.
#[derive(Debug, Clone, serde::Serialize)]
pub enum ReconcileEvent {}

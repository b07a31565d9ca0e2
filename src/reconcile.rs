//! The reconciler: inventory, pure plan, apply, status. Issue #6.

/// A reconciler event.
#[derive(Debug, Clone, serde::Serialize)]
pub enum ReconcileEvent {}

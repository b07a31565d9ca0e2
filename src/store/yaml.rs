//! Placeholder until issue #2's store lands.
#![allow(clippy::missing_const_for_fn, unused_variables)]

use std::path::{Path, PathBuf};

use super::{ConfigChange, ModelFile, RecordStore, StoreError};
use crate::config::AnyModelConfig;
use crate::taxonomy::{BaseModelType, ModelType};

/// Placeholder.
#[derive(Debug)]
pub struct YamlStore {
    path: PathBuf,
}

fn todo_err(p: &Path) -> StoreError {
    StoreError::WrongKind {
        path: p.to_path_buf(),
        reason: "not implemented yet".into(),
    }
}

impl YamlStore {
    /// Placeholder.
    pub fn from_db_file(path: &Path) -> Result<Self, StoreError> {
        Err(todo_err(path))
    }
}

impl RecordStore for YamlStore {
    fn add_model(&self, key: &str, config: AnyModelConfig) -> Result<AnyModelConfig, StoreError> {
        Err(todo_err(&self.path))
    }
    fn update_model(&self, key: &str, change: ConfigChange) -> Result<AnyModelConfig, StoreError> {
        Err(todo_err(&self.path))
    }
    fn del_model(&self, key: &str) -> Result<(), StoreError> {
        Err(todo_err(&self.path))
    }
    fn get_model(&self, key: &str) -> Result<AnyModelConfig, StoreError> {
        Err(todo_err(&self.path))
    }
    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Err(todo_err(&self.path))
    }
    fn search_by_path(&self, path: &str) -> Result<Vec<AnyModelConfig>, StoreError> {
        Err(todo_err(&self.path))
    }
    fn search_by_name(
        &self,
        name: Option<&str>,
        base: Option<BaseModelType>,
        model_type: Option<ModelType>,
    ) -> Result<Vec<AnyModelConfig>, StoreError> {
        Err(todo_err(&self.path))
    }
    fn search_by_tag(&self, tags: &[String]) -> Result<Vec<AnyModelConfig>, StoreError> {
        Err(todo_err(&self.path))
    }
    fn search_by_hash(&self, hash: &str) -> Result<Vec<AnyModelConfig>, StoreError> {
        Err(todo_err(&self.path))
    }
    fn set_model_files(&self, key: &str, files: &[ModelFile]) -> Result<(), StoreError> {
        Err(todo_err(&self.path))
    }
    fn model_files(&self, key: &str) -> Result<Vec<ModelFile>, StoreError> {
        Err(todo_err(&self.path))
    }
    fn location(&self) -> &Path {
        &self.path
    }
}

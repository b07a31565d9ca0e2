//! The Hugging Face Hub client and model sources. Issue #5.

pub mod source;

pub use source::{
    HfModelSource, LocalModelSource, ModelSource, SourceError, Token, UrlModelSource,
};

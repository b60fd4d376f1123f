//! agentvm: an embeddable AI-agent runtime.
#![warn(missing_docs)]

pub mod error;
pub mod model;
pub mod repository;

pub use error::{Error, ErrorKind, Result};

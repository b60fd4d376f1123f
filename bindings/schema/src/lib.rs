//! The one schema of agentvm's protocol and the types generated from it.
//!
//! [`document`] derives the JSON Schema of every command, response and event from the Rust types
//! of agentvm-model (schemars, feature `schema`); [`python`] and [`typescript`] print it as
//! TypedDicts and as TypeScript declarations. `cargo run -p agentvm-schema` writes the three
//! files; `-- --check` fails naming each committed file that differs from what it would write.
#![warn(missing_docs)]

pub mod document;
pub mod python;
pub mod types;
pub mod typescript;

use std::path::Path;

/// One generated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Where it goes, relative to the repository's root.
    pub path: &'static str,
    /// What it holds.
    pub contents: String,
}

/// The schema, the Python module and the TypeScript declarations, in that order.
pub fn outputs() -> Result<Vec<Output>, String> {
    let schema = document::document()?;
    let protocol = types::read(&schema)?;
    let mut json = serde_json::to_string_pretty(&schema).map_err(|e| e.to_string())?;
    json.push('\n');
    Ok(vec![
        Output {
            path: document::SCHEMA_PATH,
            contents: json,
        },
        Output {
            path: python::PYTHON_PATH,
            contents: python::write(&protocol)?,
        },
        Output {
            path: typescript::TYPESCRIPT_PATH,
            contents: typescript::write(&protocol)?,
        },
    ])
}

/// The paths under `root` whose contents differ from `outputs` (or that are missing).
pub fn drifted(root: &Path, outputs: &[Output]) -> Vec<&'static str> {
    outputs
        .iter()
        .filter(|o| std::fs::read(root.join(o.path)).ok().as_deref() != Some(o.contents.as_bytes()))
        .map(|o| o.path)
        .collect()
}

/// The repository's root (this crate is `bindings/schema`).
pub fn repository_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

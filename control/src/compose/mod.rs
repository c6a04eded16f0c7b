//! Compose files (format 3.0 to 3.9) as `docker stack deploy` reads them, and their conversion
//! into what a stack deploy creates: pure logic over the files' text, the client's environment
//! and a way to read the files the compose file names (`env_file`, secrets' and configs' `file`).
//! The CLI reads the files and talks to the managers; nothing here does I/O.
//!
//! No compose-model crate fits Swarm's 3.x format with key-path errors (`docker-compose-types`
//! lacks `rollback_config`/`endpoint_mode` and reads deploy labels as a list; `compose_spec`
//! models the newer Compose Specification and accepts keys 3.x refuses), so the model is serde
//! types refusing unknown keys, read through `serde_yaml` and `serde_path_to_error`.

mod convert;
mod interpolate;
mod load;
mod merge;
mod model;
mod syntax;
mod versions;

pub use convert::{Context, FilePlan, FileSource, NetworkPlan, Plan, ServicePlan, convert, scoped};
pub use interpolate::substitute;
pub use model::Config;

use std::collections::{BTreeSet, HashMap};

/// The label every object of a stack carries, with the stack's name.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";
/// The label on a stack's services with the image the compose file names.
pub const IMAGE_LABEL: &str = "com.docker.stack.image";

/// Why a stack's files cannot be deployed: one line, naming the file and key path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: {path}: {message}")]
    Key {
        file: String,
        path: String,
        message: String,
    },
    #[error("{file}: {path}: {message}")]
    Interpolation {
        file: String,
        path: String,
        message: String,
    },
    /// Found while converting the merged files.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl ComposeError {
    pub(crate) fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        ComposeError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// One compose file: the name it was given (for errors) and its text.
#[derive(Debug, Clone)]
pub struct ComposeFile {
    pub name: String,
    pub text: String,
}

/// The files merged, with the warnings docker prints for them.
#[derive(Debug, Default)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// Reads and merges `files` in order, substituting variables from `env`.
pub fn load(files: &[ComposeFile], env: &HashMap<String, String>) -> Result<Loaded, ComposeError> {
    let mut config: Option<Config> = None;
    let mut unsupported = BTreeSet::new();
    let mut deprecated = BTreeSet::new();
    let mut not_carried = BTreeSet::new();
    for file in files {
        let loaded = load::load(&file.name, &file.text, env)?;
        unsupported.extend(loaded.unsupported);
        deprecated.extend(loaded.deprecated);
        not_carried.extend(loaded.not_carried);
        config = Some(match config {
            Some(base) => merge::merge(base, loaded.config),
            None => loaded.config,
        });
    }
    let mut warnings = Vec::new();
    if !unsupported.is_empty() {
        let names: Vec<String> = unsupported.into_iter().collect();
        warnings.push(format!(
            "Ignoring unsupported options: {}",
            names.join(", ")
        ));
    }
    if !deprecated.is_empty() {
        let lines: Vec<String> = deprecated
            .into_iter()
            .map(|(key, why)| format!("{key}: {why}"))
            .collect();
        warnings.push(format!(
            "Ignoring deprecated options:\n\n{}",
            lines.join("\n")
        ));
    }
    if !not_carried.is_empty() {
        let names: Vec<String> = not_carried.into_iter().collect();
        warnings.push(format!(
            "Ignoring options mesh does not support yet: {}",
            names.join(", ")
        ));
    }
    Ok(Loaded {
        config: config.unwrap_or_default(),
        warnings,
    })
}

#[cfg(test)]
mod tests;

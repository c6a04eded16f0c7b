//! meshd's config file: a TOML table whose keys are meshd's long flag names
//! (`gossip-port = 7946`, `state-dir = "/srv/mesh"`). It is read generically over the clap
//! definition of [`Config`], so a flag added to meshd is a key of the file at once. What the command
//! line or a `MESH_*` variable sets wins over the file; the file wins over the defaults.
//!
//! A file that does not parse, a key that is no flag, a value of the wrong type or one the flag
//! would refuse: each stops meshd with one line naming the file and the key.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, CommandFactory, FromArgMatches, Parser};

use super::Config;

/// Read when `--config` is not given and the file exists.
pub const DEFAULT_PATH: &str = "/etc/mesh/meshd.toml";

/// The exit status of a meshd refusing its configuration (sysexits.h's EX_CONFIG).
pub const EX_CONFIG: u8 = 78;

/// Flags that are no settings of the daemon: never keys of the file.
const NOT_KEYS: &[&str] = &["config", "help", "version"];

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The command line itself (or `--help`, `--version`): clap prints and exits.
    #[error(transparent)]
    Cli(#[from] clap::Error),
    #[error("{}: {problem}", path.display())]
    File { path: PathBuf, problem: String },
    #[error("{}: key `{key}`: {problem}", path.display())]
    Key {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

/// meshd's configuration from its command line, its environment and its config file.
pub fn load() -> Result<Config, LoadError> {
    load_from(std::env::args_os().collect(), Path::new(DEFAULT_PATH))
}

/// [`load`] from `args` (the program name first), reading `default_file` when `--config` is not
/// given and that file exists.
pub fn load_from(args: Vec<OsString>, default_file: &Path) -> Result<Config, LoadError> {
    let mut command = Config::command();
    let matches = command.try_get_matches_from_mut(&args)?;
    let path = match matches.get_one::<PathBuf>("config") {
        Some(path) => path.clone(),
        None if default_file.exists() => default_file.to_path_buf(),
        None => return Ok(Config::from_arg_matches(&matches)?),
    };
    let text = std::fs::read_to_string(&path).map_err(|err| LoadError::File {
        path: path.clone(),
        problem: format!("cannot read it ({err})"),
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|err: toml::de::Error| LoadError::File {
            path: path.clone(),
            problem: parse_problem(&text, &err),
        })?;
    command.build();
    let mut from_file = Vec::new();
    for (key, value) in &table {
        let key_error = |problem: String| LoadError::Key {
            path: path.clone(),
            key: key.clone(),
            problem,
        };
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(key) && !NOT_KEYS.contains(&key.as_str()))
            .ok_or_else(|| {
                key_error(format!(
                    "no such setting (meshd takes {})",
                    keys().join(", ")
                ))
            })?;
        let flags = flags_for(arg, key, value).map_err(key_error)?;
        let set_outside_the_file = matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if !set_outside_the_file {
            from_file.extend(flags);
        }
    }
    // The file's flags go first: nothing they set is set again after them.
    let mut merged = vec![args.first().cloned().unwrap_or_else(|| "meshd".into())];
    merged.extend(from_file);
    merged.extend(args.into_iter().skip(1));
    Ok(Config::try_parse_from(merged)?)
}

/// Every key the file takes: the long names of meshd's flags.
pub fn keys() -> Vec<String> {
    Config::command()
        .get_arguments()
        .filter_map(Arg::get_long)
        .filter(|long| !NOT_KEYS.contains(long))
        .map(String::from)
        .collect()
}

/// The command-line flags that say what `value` says for `arg`, each value checked by the flag's
/// own parser; or why `value` cannot be taken.
fn flags_for(arg: &Arg, key: &str, value: &toml::Value) -> Result<Vec<OsString>, String> {
    if !arg.get_action().takes_values() {
        return match value {
            toml::Value::Boolean(true) => Ok(vec![format!("--{key}").into()]),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            other => Err(format!(
                "expected true or false, found {}",
                type_name(other)
            )),
        };
    }
    let values = match value {
        toml::Value::Array(items) if matches!(arg.get_action(), ArgAction::Append) => {
            items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?
        }
        other => vec![scalar(other)?],
    };
    // The flag alone, so that clap's own parser judges the value and nothing else.
    let alone = clap::Command::new("meshd").arg(arg.clone());
    let mut flags = Vec::new();
    for value in values {
        let flag: OsString = format!("--{key}={value}").into();
        alone
            .clone()
            .try_get_matches_from([OsString::from("meshd"), flag.clone()])
            .map_err(|err| clap_problem(&err))?;
        flags.push(flag);
    }
    Ok(flags)
}

/// A string, a number or a boolean as the command line would spell it.
fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "expected a string or a number, found {}",
            type_name(other)
        )),
    }
}

fn type_name(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// A clap error's first line without its `error: ` prefix: `invalid value 'x' for '--gossip-port
/// <GOSSIP_PORT>': invalid digit found in string`.
fn clap_problem(err: &clap::Error) -> String {
    let text = err.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// A TOML syntax error as `line N: message`, in one line.
fn parse_problem(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().lines().collect::<Vec<_>>().join(" ");
    match err.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests;

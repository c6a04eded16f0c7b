//! Variable substitution in a compose file's values, as `docker stack deploy` does it from the
//! client's environment (no `.env` file): `$VAR`, `${VAR}`, `${VAR:-default}` (unset or empty),
//! `${VAR-default}` (unset), `${VAR:?error}`, `${VAR?error}` and `$$` for a literal `$`. Keys are
//! not substituted. A value substituted at a key that takes a number or a boolean is cast to it.

use serde_yaml::Value;
use std::collections::HashMap;

/// A substitution that failed: where, and why (one line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpolationError {
    pub path: String,
    pub message: String,
}

/// Substitutes every string value under `value`; `path` names `value` in errors.
pub fn interpolate(
    value: &mut Value,
    env: &HashMap<String, String>,
    path: &mut Vec<String>,
) -> Result<(), InterpolationError> {
    match value {
        Value::String(s) if s.contains('$') => {
            let out = substitute(s, env).map_err(|message| InterpolationError {
                path: path.join("."),
                message,
            })?;
            *value = cast(path, out);
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let last = path.pop();
                let name = format!("{}[{i}]", last.as_deref().unwrap_or(""));
                path.push(name);
                let result = interpolate(item, env, path);
                path.pop();
                path.extend(last);
                result?;
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                path.push(key_text(key));
                let result = interpolate(item, env, path);
                path.pop();
                result?;
            }
        }
        Value::Tagged(tagged) => interpolate(&mut tagged.value, env, path)?,
        _ => {}
    }
    Ok(())
}

/// A mapping key as text, for paths.
pub fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// Substitutes the variables of one string.
pub fn substitute(template: &str, env: &HashMap<String, String>) -> Result<String, String> {
    let invalid = || {
        format!(
            "invalid interpolation format {template:?}: you may need to escape any $ with another $"
        )
    };
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').ok_or_else(invalid)?;
            out.push_str(&expand(&braced[..end], env).ok_or_else(invalid)??);
            rest = &braced[end + 1..];
        } else {
            let len = name_len(after);
            if len == 0 {
                return Err(invalid());
            }
            out.push_str(env.get(&after[..len]).map_or("", String::as_str));
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The length of the variable name at the start of `s` (`[_a-zA-Z][_a-zA-Z0-9]*`).
fn name_len(s: &str) -> usize {
    let mut chars = s.char_indices();
    match chars.next() {
        Some((_, c)) if c == '_' || c.is_ascii_alphabetic() => {}
        _ => return 0,
    }
    chars
        .find(|(_, c)| !(*c == '_' || c.is_ascii_alphanumeric()))
        .map_or(s.len(), |(i, _)| i)
}

/// One `${…}`: `None` when its syntax is invalid, `Some(Err)` for a required variable missing.
fn expand(inner: &str, env: &HashMap<String, String>) -> Option<Result<String, String>> {
    let len = name_len(inner);
    if len == 0 {
        return None;
    }
    let (name, modifier) = inner.split_at(len);
    let value = env.get(name);
    let set_non_empty = value.is_some_and(|v| !v.is_empty());
    let result = match modifier {
        "" => Ok(value.cloned().unwrap_or_default()),
        m if m.starts_with(":-") => Ok(if set_non_empty {
            value.cloned().unwrap_or_default()
        } else {
            m[2..].to_string()
        }),
        m if m.starts_with('-') => Ok(value.cloned().unwrap_or_else(|| m[1..].to_string())),
        m if m.starts_with(":?") => {
            if set_non_empty {
                Ok(value.cloned().unwrap_or_default())
            } else {
                Err(format!(
                    "required variable {name} is missing a value: {}",
                    &m[2..]
                ))
            }
        }
        m if m.starts_with('?') => match value {
            Some(v) => Ok(v.clone()),
            None => Err(format!(
                "required variable {name} is missing a value: {}",
                &m[1..]
            )),
        },
        _ => return None,
    };
    Some(result)
}

/// What a substituted value becomes at a key that takes a number or a boolean (as docker's
/// loader casts them); elsewhere it stays a string.
fn cast(path: &[String], value: String) -> Value {
    let kind = CASTS.iter().find_map(|(pattern, kind)| {
        let pattern: Vec<&str> = pattern.split('.').collect();
        let matches = pattern.len() == path.len()
            && pattern.iter().zip(path).all(|(p, s)| {
                *p == "*"
                    || p == s
                    || (p.ends_with("[]") && s.starts_with(&p[..p.len() - 2]) && s.ends_with(']'))
            });
        matches.then_some(*kind)
    });
    let parsed = match kind {
        Some(Cast::Int) => value.trim().parse::<i64>().ok().map(Value::from),
        Some(Cast::Float) => value.trim().parse::<f64>().ok().map(Value::from),
        Some(Cast::Bool) => match value.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" => Some(Value::Bool(true)),
            "false" | "no" | "n" | "off" => Some(Value::Bool(false)),
            _ => None,
        },
        None => None,
    };
    // A value that does not cast stays a string, and the type check names its key.
    parsed.unwrap_or(Value::String(value))
}

#[derive(Clone, Copy)]
enum Cast {
    Int,
    Float,
    Bool,
}

/// Keys whose substituted values are cast; `x[]` is any item of list `x`.
const CASTS: &[(&str, Cast)] = &[
    ("services.*.deploy.replicas", Cast::Int),
    ("services.*.deploy.update_config.parallelism", Cast::Int),
    (
        "services.*.deploy.update_config.max_failure_ratio",
        Cast::Float,
    ),
    ("services.*.deploy.rollback_config.parallelism", Cast::Int),
    (
        "services.*.deploy.rollback_config.max_failure_ratio",
        Cast::Float,
    ),
    ("services.*.deploy.restart_policy.max_attempts", Cast::Int),
    (
        "services.*.deploy.placement.max_replicas_per_node",
        Cast::Int,
    ),
    ("services.*.deploy.resources.limits.pids", Cast::Int),
    ("services.*.healthcheck.retries", Cast::Int),
    ("services.*.healthcheck.disable", Cast::Bool),
    ("services.*.ports[].target", Cast::Int),
    ("services.*.ports[].published", Cast::Int),
    ("services.*.volumes[].read_only", Cast::Bool),
    ("services.*.volumes[].volume.nocopy", Cast::Bool),
    ("services.*.volumes[].tmpfs.size", Cast::Int),
    ("networks.*.external", Cast::Bool),
    ("networks.*.internal", Cast::Bool),
    ("networks.*.attachable", Cast::Bool),
    ("volumes.*.external", Cast::Bool),
    ("secrets.*.external", Cast::Bool),
    ("configs.*.external", Cast::Bool),
];

#[cfg(test)]
mod tests;

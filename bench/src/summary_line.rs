//! The benchmarks' one-line summaries (`scale: nodes=… tasks=…`, `gossip: members=…`): a prefix,
//! then `key=value` fields, the required ones first and in their order, any more after them.

use anyhow::{Context, bail};

/// A summary line's fields, `(key, value)` in their order.
pub type Fields = Vec<(String, String)>;

/// Splits `line` into its required fields (checked against `required`, in order) and the rest;
/// `what` names the line in the error when it lacks `prefix`.
pub fn fields(
    line: &str,
    prefix: &str,
    what: &str,
    required: &[&str],
) -> anyhow::Result<(Fields, Fields)> {
    let rest = line
        .trim_end()
        .strip_prefix(prefix)
        .with_context(|| format!("a {what} starts with \"{prefix}\""))?;
    let mut fields = Vec::new();
    for word in rest.split(' ') {
        let (key, value) = word
            .split_once('=')
            .with_context(|| format!("field {word:?} is not key=value"))?;
        if key.is_empty() || value.is_empty() {
            bail!("field {word:?} has an empty key or value");
        }
        fields.push((key.to_owned(), value.to_owned()));
    }
    if fields.len() < required.len() {
        bail!(
            "{} fields, at least {} expected",
            fields.len(),
            required.len()
        );
    }
    let extra = fields.split_off(required.len());
    for ((key, _), want) in fields.iter().zip(required) {
        if key != want {
            bail!("field {key:?} where {want:?} belongs");
        }
    }
    Ok((fields, extra))
}

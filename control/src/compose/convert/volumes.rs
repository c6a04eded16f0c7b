//! A service's `volumes:` as mounts: short syntax `[SOURCE:]TARGET[:MODE]` and long syntax.
//! A named volume is the stack's (`<stack>_<name>`, with the top-level volume's driver, options
//! and labels) unless external; a relative bind path starts at the compose file's directory.

use super::{Context, labels};
use crate::compose::ComposeError;
use crate::compose::model::{Config, LongVolume};
use crate::compose::syntax::ShortOrLong;
use mesh_proto::{Mount, MountType};
use std::path::{Component, Path, PathBuf};

/// Resolves a path of the compose file: `~` from `HOME`, relative ones from the working dir.
pub(crate) fn resolve_path(path: &str, context: &Context<'_>) -> PathBuf {
    let expanded = match path.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            let home = context.env.get("HOME").map_or("/", String::as_str);
            PathBuf::from(format!("{home}{rest}"))
        }
        _ => PathBuf::from(path),
    };
    normalize(&context.working_dir.join(expanded))
}

/// `a/./b/../c` as `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn is_path(source: &str) -> bool {
    source.starts_with('/') || source.starts_with('.') || source.starts_with('~')
}

/// The mount of one `volumes:` item at `path`.
pub(super) fn convert(
    path: &str,
    volume: &ShortOrLong<LongVolume>,
    config: &Config,
    context: &Context<'_>,
) -> Result<Mount, ComposeError> {
    let fail = |m: String| ComposeError::invalid(path, m);
    let long = match volume {
        ShortOrLong::Long(long) => long.clone(),
        ShortOrLong::Short(short) => short_syntax(short).map_err(fail)?,
    };
    if !long.target.starts_with('/') {
        return Err(fail(format!(
            "invalid target {:?}: must be an absolute path",
            long.target
        )));
    }
    let mut mount = Mount {
        target: long.target.clone(),
        read_only: long.read_only.unwrap_or(false),
        ..Mount::default()
    };
    if long.bind.as_ref().is_some_and(|b| b.propagation.is_some()) {
        return Err(fail(
            "bind propagation is not supported by mesh".to_string(),
        ));
    }
    let source = long.source.clone().unwrap_or_default();
    match long.kind.as_str() {
        "bind" => {
            if source.is_empty() {
                return Err(fail("a bind mount needs a source".to_string()));
            }
            mount.r#type = MountType::Bind as i32;
            mount.source = resolve_path(&source, context)
                .to_string_lossy()
                .into_owned();
        }
        "volume" => {
            mount.r#type = MountType::Volume as i32;
            mount.volume_no_copy = long.volume.as_ref().and_then(|v| v.nocopy).unwrap_or(false);
            if !source.is_empty() {
                let declared = config.volumes.get(&source).ok_or_else(|| {
                    fail(format!(
                        "undefined volume {source:?}: declare it under the top-level volumes"
                    ))
                })?;
                let external = declared.external.as_ref().is_some_and(|e| e.external);
                mount.source = super::objects::cluster_name(
                    context.stack,
                    &source,
                    declared.name.as_ref(),
                    declared.external.as_ref(),
                );
                if !external {
                    mount.volume_labels = labels(context.stack, declared.labels.as_ref());
                    mount.volume_driver = declared.driver.clone().unwrap_or_default();
                    mount.volume_driver_opts = declared
                        .driver_opts
                        .iter()
                        .map(|(k, v)| (k.clone(), v.0.clone()))
                        .collect();
                }
            }
        }
        "tmpfs" => {
            if !source.is_empty() {
                return Err(fail("a tmpfs mount takes no source".to_string()));
            }
            mount.r#type = MountType::Tmpfs as i32;
            let size = long.tmpfs.as_ref().and_then(|t| t.size).unwrap_or(0);
            mount.tmpfs_size_bytes =
                i64::try_from(size).map_err(|_| fail(format!("tmpfs size {size} is too large")))?;
        }
        other => {
            return Err(fail(format!(
                "invalid volume type {other:?}: expected volume, bind or tmpfs"
            )));
        }
    }
    Ok(mount)
}

/// `TARGET`, `SOURCE:TARGET` or `SOURCE:TARGET:MODE` (`ro`, `rw`, `nocopy`, SELinux labels).
fn short_syntax(spec: &str) -> Result<LongVolume, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [target] => ("", *target, ""),
        [source, target] => (*source, *target, ""),
        [source, target, mode] => (*source, *target, *mode),
        _ => {
            return Err(format!(
                "invalid volume {spec:?}: expected [SOURCE:]TARGET[:MODE]"
            ));
        }
    };
    if target.is_empty() {
        return Err(format!("invalid volume {spec:?}: the target is empty"));
    }
    let mut long = LongVolume {
        kind: if is_path(source) { "bind" } else { "volume" }.to_string(),
        source: (!source.is_empty()).then(|| source.to_string()),
        target: target.to_string(),
        ..LongVolume::default()
    };
    for option in mode.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => long.read_only = Some(true),
            "rw" => long.read_only = Some(false),
            "nocopy" if long.kind == "volume" => {
                long.volume = Some(crate::compose::model::VolumeOptions { nocopy: Some(true) });
            }
            // SELinux relabelling and consistency hints change nothing on a Linux node here.
            "z" | "Z" | "cached" | "delegated" | "consistent" => {}
            other => {
                return Err(format!(
                    "invalid volume {spec:?}: unknown mode {other:?} (expected ro, rw or nocopy)"
                ));
            }
        }
    }
    Ok(long)
}

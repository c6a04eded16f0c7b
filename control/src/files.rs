//! Where a service's secrets and configs appear in its containers, as Docker places them: a
//! secret's relative target under `/run/secrets/`, a config's under `/`, an absolute target as
//! it is; owner `0:0` and mode `0444` unless asked otherwise. Pure: the API checks specs with it,
//! meshctl fills in defaults with it, and the agent lays the files out with it.

use mesh_proto::{ConfigReference, ContainerSpec, FileTarget, SecretReference};
use std::collections::HashMap;

/// Where secrets with a relative target go in the container.
pub const SECRETS_DIR: &str = "/run/secrets";
/// Docker's default mode of a secret's or config's file.
pub const DEFAULT_MODE: u32 = 0o444;

/// Whether a reference is to a secret or a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Secret,
    Config,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Secret => "secret",
            FileKind::Config => "config",
        }
    }
}

/// The default target of `name`: the name itself (under `/run/secrets/`) for a secret, `/<name>`
/// for a config.
pub fn default_target(kind: FileKind, name: &str) -> String {
    match kind {
        FileKind::Secret => name.to_string(),
        FileKind::Config => format!("/{name}"),
    }
}

/// A file target with Docker's defaults for what is left empty.
pub fn with_defaults(kind: FileKind, name: &str, file: Option<FileTarget>) -> FileTarget {
    let mut file = file.unwrap_or(FileTarget {
        mode: DEFAULT_MODE,
        ..Default::default()
    });
    if file.name.is_empty() {
        file.name = default_target(kind, name);
    }
    if file.uid.is_empty() {
        file.uid = "0".into();
    }
    if file.gid.is_empty() {
        file.gid = "0".into();
    }
    file
}

/// The absolute path of `target` in the container: relative targets go under `/run/secrets/` for
/// secrets and `/` for configs. Refuses empty, `.` and `..` components, and a target that would
/// be the secrets directory itself.
pub fn container_path(kind: FileKind, target: &str) -> Result<String, String> {
    let what = kind.as_str();
    let bad = |why: &str| Err(format!("invalid {what} target {target:?}: {why}"));
    if target.is_empty() {
        return bad("it is empty");
    }
    if target.contains('\0') {
        return bad("it holds a NUL byte");
    }
    let relative = target.strip_prefix('/');
    let rest = relative.unwrap_or(target);
    if rest.is_empty() {
        return bad("it names no file");
    }
    if rest
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("use a path without empty, '.' or '..' components");
    }
    let path = match (relative, kind) {
        (Some(_), _) => target.to_string(),
        (None, FileKind::Secret) => format!("{SECRETS_DIR}/{target}"),
        (None, FileKind::Config) => format!("/{target}"),
    };
    if path == SECRETS_DIR {
        return bad("it is the secrets directory itself");
    }
    Ok(path)
}

/// A numeric uid or gid, as the daemon requires it.
fn numeric(what: &str, value: &str) -> Result<u32, String> {
    value
        .parse()
        .map_err(|_| format!("invalid {what} {value:?}: expected a number"))
}

/// One file a container gets, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub kind: FileKind,
    /// The secret's or config's id.
    pub id: String,
    pub name: String,
    /// Absolute, in the container.
    pub path: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl File {
    /// Whether it lies in the container's secrets directory.
    pub fn in_secrets_dir(&self) -> bool {
        self.path
            .strip_prefix(SECRETS_DIR)
            .is_some_and(|rest| rest.starts_with('/'))
    }
}

fn file(kind: FileKind, id: &str, name: &str, target: Option<&FileTarget>) -> Result<File, String> {
    let target = with_defaults(kind, name, target.cloned());
    let path = container_path(kind, &target.name)?;
    if target.mode > 0o777 {
        return Err(format!(
            "invalid {} mode {:o} for {name}: expected at most 0777",
            kind.as_str(),
            target.mode
        ));
    }
    Ok(File {
        kind,
        id: id.to_string(),
        name: name.to_string(),
        path,
        uid: numeric("uid", &target.uid)?,
        gid: numeric("gid", &target.gid)?,
        mode: target.mode,
    })
}

/// Every file a container gets from its secrets and configs, checked: targets valid and distinct
/// (as Swarm refuses "conflicting targets"), owners numeric, modes at most 0777.
pub fn files(container: &ContainerSpec) -> Result<Vec<File>, String> {
    let secrets = container.secrets.iter().map(|r: &SecretReference| {
        file(
            FileKind::Secret,
            &r.secret_id,
            &r.secret_name,
            r.file.as_ref(),
        )
    });
    let configs = container.configs.iter().map(|r: &ConfigReference| {
        file(
            FileKind::Config,
            &r.config_id,
            &r.config_name,
            r.file.as_ref(),
        )
    });
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for file in secrets.chain(configs) {
        let file = file?;
        if let Some(other) = seen.insert(file.path.clone(), file.name.clone()) {
            return Err(format!(
                "{} references '{other}' and '{}' have a conflicting target: '{}'",
                file.kind.as_str(),
                file.name,
                file.path
            ));
        }
        out.push(file);
    }
    // A file inside another's path would need that file to be a directory.
    for a in &out {
        for b in &out {
            if b.path.starts_with(&format!("{}/", a.path)) {
                return Err(format!(
                    "{} target '{}' lies inside target '{}'",
                    b.kind.as_str(),
                    b.path,
                    a.path
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, target: &str, uid: &str, mode: u32) -> SecretReference {
        SecretReference {
            secret_id: format!("id-{name}"),
            secret_name: name.into(),
            file: Some(FileTarget {
                name: target.into(),
                uid: uid.into(),
                gid: String::new(),
                mode,
            }),
        }
    }

    fn config(name: &str, target: &str) -> ConfigReference {
        ConfigReference {
            config_id: format!("id-{name}"),
            config_name: name.into(),
            file: (!target.is_empty()).then(|| FileTarget {
                name: target.into(),
                mode: DEFAULT_MODE,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn paths_follow_dockers_placement() {
        let cases = [
            (FileKind::Secret, "db", Ok("/run/secrets/db")),
            (FileKind::Secret, "app/db", Ok("/run/secrets/app/db")),
            (FileKind::Secret, "/etc/db.pw", Ok("/etc/db.pw")),
            (FileKind::Config, "app.conf", Ok("/app.conf")),
            (FileKind::Config, "/etc/app.conf", Ok("/etc/app.conf")),
            (FileKind::Secret, "", Err("empty")),
            (FileKind::Secret, "/", Err("no file")),
            (FileKind::Secret, "../etc/passwd", Err("'..'")),
            (FileKind::Config, "/etc//x", Err("empty")),
            (FileKind::Config, "/etc/./x", Err("'.'")),
            (FileKind::Secret, "/run/secrets", Err("secrets directory")),
        ];
        for (kind, target, want) in cases {
            let got = container_path(kind, target);
            match want {
                Ok(path) => assert_eq!(got.as_deref(), Ok(path), "{target}"),
                Err(why) => {
                    let err = got.expect_err(target);
                    assert!(err.contains(why), "{target}: {err}");
                }
            }
        }
    }

    #[test]
    fn defaults_are_dockers() {
        let file = with_defaults(FileKind::Secret, "db", None);
        assert_eq!((file.name.as_str(), file.uid.as_str()), ("db", "0"));
        assert_eq!((file.gid.as_str(), file.mode), ("0", 0o444));
        assert_eq!(with_defaults(FileKind::Config, "app", None).name, "/app");
    }

    #[test]
    fn files_are_checked_together() {
        let mut c = ContainerSpec {
            secrets: vec![secret("db", "db", "1000", 0o400)],
            configs: vec![config("app", ""), config("web", "/etc/web.conf")],
            ..Default::default()
        };
        let files = files(&c).expect("valid");
        assert_eq!(files.len(), 3);
        assert_eq!(files[0].path, "/run/secrets/db");
        assert_eq!(
            (files[0].uid, files[0].gid, files[0].mode),
            (1000, 0, 0o400)
        );
        assert!(files[0].in_secrets_dir() && !files[1].in_secrets_dir());
        assert_eq!(files[1].path, "/app");

        type Change = Box<dyn Fn(&mut ContainerSpec)>;
        let bad: [(Change, &str); 5] = [
            (
                Box::new(|c| {
                    c.secrets
                        .push(secret("other", "/run/secrets/db", "", 0o444))
                }),
                "conflicting target",
            ),
            (
                Box::new(|c| c.configs.push(config("x", "/app/inner"))),
                "lies inside",
            ),
            (
                Box::new(|c| c.secrets[0].file.as_mut().unwrap().uid = "root".into()),
                "uid",
            ),
            (
                Box::new(|c| c.secrets[0].file.as_mut().unwrap().mode = 0o1777),
                "mode",
            ),
            (
                Box::new(|c| {
                    c.configs[0].file = Some(FileTarget {
                        name: "a/../b".into(),
                        ..Default::default()
                    })
                }),
                "'..'",
            ),
        ];
        for (change, want) in bad {
            let mut broken = c.clone();
            change(&mut broken);
            let err = super::files(&broken).expect_err(want);
            assert!(err.contains(want) && !err.contains('\n'), "{err}");
        }
        c.secrets.clear();
        assert_eq!(super::files(&c).map(|f| f.len()), Ok(2));
    }
}

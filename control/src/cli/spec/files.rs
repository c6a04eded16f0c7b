//! `--secret`/`--config` (create) and `--secret-add`/`--secret-rm`/`--config-add`/`--config-rm`
//! (update), read as Docker reads them: `source=S,target=T,uid=U,gid=G,mode=0444` or just `S`.
//! The managers resolve the names and check the targets; these parsers refuse what cannot be a
//! reference at all.

use clap::Args;
use mesh_proto::{ConfigReference, ContainerSpec, FileTarget, SecretReference};

use crate::files::{DEFAULT_MODE, FileKind, with_defaults};

/// A `--secret` or `--config` value: the source's name and where its file goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub source: String,
    pub file: FileTarget,
}

fn parse(kind: FileKind, value: &str) -> Result<FileRef, String> {
    let what = kind.as_str();
    let fail = |reason: String| format!("invalid {what} {value:?}: {reason}");
    let mut source = String::new();
    let mut file = FileTarget {
        mode: DEFAULT_MODE,
        ..Default::default()
    };
    if !value.contains('=') && !value.contains(',') {
        source = value.to_string();
    } else {
        for field in value.split(',') {
            let Some((key, val)) = field.split_once('=') else {
                return Err(fail(format!(
                    "invalid field {field:?}: must be a key=value pair"
                )));
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "source" | "src" => source = val.to_string(),
                "target" => file.name = val.to_string(),
                "uid" => file.uid = val.to_string(),
                "gid" => file.gid = val.to_string(),
                "mode" => file.mode = parse_mode(val).map_err(fail)?,
                other => return Err(fail(format!("invalid field key {other:?}"))),
            }
        }
    }
    if source.is_empty() {
        return Err(fail("source is required".into()));
    }
    for (id, name) in [(&file.uid, "uid"), (&file.gid, "gid")] {
        if !id.is_empty() && id.parse::<u32>().is_err() {
            return Err(fail(format!("invalid {name} {id:?}: expected a number")));
        }
    }
    let file = with_defaults(kind, &source, Some(file));
    crate::files::container_path(kind, &file.name).map_err(fail)?;
    Ok(FileRef { source, file })
}

/// A file mode as Docker's `strconv.ParseUint(v, 0, 32)` reads it (`0444` is octal), at most 0777.
fn parse_mode(value: &str) -> Result<u32, String> {
    let bad = || format!("invalid mode {value:?}: expected an octal mode such as 0444");
    let mode = if let Some(hex) = value.strip_prefix("0x").or(value.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16).map_err(|_| bad())?
    } else if let Some(octal) = value.strip_prefix("0o").or(value.strip_prefix("0O")) {
        u32::from_str_radix(octal, 8).map_err(|_| bad())?
    } else if value.len() > 1 && value.starts_with('0') {
        u32::from_str_radix(&value[1..], 8).map_err(|_| bad())?
    } else {
        value.parse().map_err(|_| bad())?
    };
    if mode > 0o777 {
        return Err(format!("invalid mode {value:?}: at most 0777"));
    }
    Ok(mode)
}

pub fn parse_secret(value: &str) -> Result<FileRef, String> {
    parse(FileKind::Secret, value)
}

pub fn parse_config(value: &str) -> Result<FileRef, String> {
    parse(FileKind::Config, value)
}

fn secret_ref(r: &FileRef) -> SecretReference {
    SecretReference {
        secret_id: String::new(),
        secret_name: r.source.clone(),
        file: Some(r.file.clone()),
    }
}

fn config_ref(r: &FileRef) -> ConfigReference {
    ConfigReference {
        config_id: String::new(),
        config_name: r.source.clone(),
        file: Some(r.file.clone()),
    }
}

/// `service create`'s secret and config flags.
#[derive(Args, Debug, Default)]
pub struct FileFlags {
    /// Specify secrets to expose to the service
    #[arg(long = "secret", value_name = "SECRET", value_parser = parse_secret)]
    pub secrets: Vec<FileRef>,
    /// Specify configurations to expose to the service
    #[arg(long = "config", value_name = "CONFIG", value_parser = parse_config)]
    pub configs: Vec<FileRef>,
}

impl FileFlags {
    pub fn apply(&self, container: &mut ContainerSpec) {
        container.secrets = self.secrets.iter().map(secret_ref).collect();
        container.configs = self.configs.iter().map(config_ref).collect();
    }
}

/// `service update`'s secret and config flags: removals (by name) first, then additions, so that
/// `--secret-rm old --secret-add source=new,target=old` rotates a secret in place.
#[derive(Args, Debug, Default)]
pub struct FileUpdateFlags {
    /// Add or update a secret on a service
    #[arg(long, value_name = "SECRET", value_parser = parse_secret)]
    pub secret_add: Vec<FileRef>,
    /// Remove a secret
    #[arg(long, value_name = "SECRET")]
    pub secret_rm: Vec<String>,
    /// Add or update a config file on a service
    #[arg(long, value_name = "CONFIG", value_parser = parse_config)]
    pub config_add: Vec<FileRef>,
    /// Remove a configuration file
    #[arg(long, value_name = "CONFIG")]
    pub config_rm: Vec<String>,
}

impl FileUpdateFlags {
    pub fn apply(&self, container: &mut ContainerSpec) {
        let secrets = &mut container.secrets;
        secrets.retain(|r| {
            !self.secret_rm.contains(&r.secret_name) && !self.secret_rm.contains(&r.secret_id)
        });
        for add in &self.secret_add {
            secrets.retain(|r| r.secret_name != add.source && r.secret_id != add.source);
            secrets.push(secret_ref(add));
        }
        let configs = &mut container.configs;
        configs.retain(|r| {
            !self.config_rm.contains(&r.config_name) && !self.config_rm.contains(&r.config_id)
        });
        for add in &self.config_add {
            configs.retain(|r| r.config_name != add.source && r.config_id != add.source);
            configs.push(config_ref(add));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_dockers() {
        let r = parse_secret("source=db,target=pw,uid=1000,gid=1000,mode=0400").expect("valid");
        assert_eq!(r.source, "db");
        assert_eq!(
            r.file,
            FileTarget {
                name: "pw".into(),
                uid: "1000".into(),
                gid: "1000".into(),
                mode: 0o400,
            }
        );
        let short = parse_secret("db").expect("short form");
        assert_eq!((short.file.name.as_str(), short.file.mode), ("db", 0o444));
        assert_eq!(
            (short.file.uid.as_str(), short.file.gid.as_str()),
            ("0", "0")
        );
        let config = parse_config("src=app,target=/etc/app.conf").expect("valid");
        assert_eq!(config.file.name, "/etc/app.conf");
        assert_eq!(parse_config("app").expect("short").file.name, "/app");
        assert_eq!(
            parse_secret("source=a,mode=292").map(|r| r.file.mode),
            Ok(0o444)
        );

        let bad = [
            ("source=db,mode=0899", "invalid mode"),
            ("source=db,mode=rw", "invalid mode"),
            ("source=db,mode=01777", "at most 0777"),
            ("source=db,colour=red", "invalid field key \"colour\""),
            ("source=db,target", "key=value"),
            ("target=x", "source is required"),
            ("source=db,uid=root", "invalid uid"),
            ("source=db,target=../x", "'..'"),
            ("", "source is required"),
        ];
        for (value, want) in bad {
            let err = parse_secret(value).expect_err(value);
            assert!(err.contains(want) && !err.contains('\n'), "{value}: {err}");
        }
    }

    #[test]
    fn update_removes_then_adds() {
        let mut c = ContainerSpec::default();
        FileFlags {
            secrets: vec![parse_secret("source=old,target=pw").unwrap()],
            configs: vec![parse_config("app").unwrap()],
        }
        .apply(&mut c);
        c.secrets[0].secret_id = "id-old".into();
        FileUpdateFlags {
            secret_add: vec![parse_secret("source=new,target=pw").unwrap()],
            secret_rm: vec!["old".into()],
            config_add: vec![],
            config_rm: vec!["app".into()],
        }
        .apply(&mut c);
        assert_eq!(c.secrets.len(), 1);
        assert_eq!(c.secrets[0].secret_name, "new");
        assert_eq!(
            c.secrets[0].file.as_ref().map(|f| f.name.as_str()),
            Some("pw")
        );
        assert!(c.configs.is_empty());
    }
}

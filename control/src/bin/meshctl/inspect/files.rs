//! A service's secret and config references as the Engine API shows them in
//! `Spec.TaskTemplate.ContainerSpec.Secrets` and `.Configs`.

use mesh_proto::{ConfigReference, FileTarget, SecretReference};
use serde::Serialize;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FileJson {
    pub name: String,
    #[serde(rename = "UID")]
    pub uid: String,
    #[serde(rename = "GID")]
    pub gid: String,
    pub mode: u32,
}

#[derive(Serialize)]
pub struct SecretJson {
    #[serde(rename = "File")]
    pub file: FileJson,
    #[serde(rename = "SecretID")]
    pub secret_id: String,
    #[serde(rename = "SecretName")]
    pub secret_name: String,
}

#[derive(Serialize)]
pub struct ConfigJson {
    #[serde(rename = "File")]
    pub file: FileJson,
    #[serde(rename = "ConfigID")]
    pub config_id: String,
    #[serde(rename = "ConfigName")]
    pub config_name: String,
}

fn file(file: Option<FileTarget>) -> FileJson {
    let file = file.unwrap_or_default();
    FileJson {
        name: file.name,
        uid: file.uid,
        gid: file.gid,
        mode: file.mode,
    }
}

pub fn secrets(refs: Vec<SecretReference>) -> Vec<SecretJson> {
    refs.into_iter()
        .map(|r| SecretJson {
            file: file(r.file),
            secret_id: r.secret_id,
            secret_name: r.secret_name,
        })
        .collect()
}

pub fn configs(refs: Vec<ConfigReference>) -> Vec<ConfigJson> {
    refs.into_iter()
        .map(|r| ConfigJson {
            file: file(r.file),
            config_id: r.config_id,
            config_name: r.config_name,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_have_dockers_keys() {
        let json = serde_json::to_value(secrets(vec![SecretReference {
            secret_id: "sid".into(),
            secret_name: "db".into(),
            file: Some(FileTarget {
                name: "db".into(),
                uid: "0".into(),
                gid: "0".into(),
                mode: 0o444,
            }),
        }]))
        .unwrap();
        assert_eq!(json[0]["SecretID"], "sid");
        assert_eq!(json[0]["SecretName"], "db");
        assert_eq!(json[0]["File"]["UID"], "0");
        assert_eq!(json[0]["File"]["Mode"], 292);
        let json = serde_json::to_value(configs(vec![ConfigReference::default()])).unwrap();
        assert!(json[0].get("ConfigID").is_some() && json[0]["File"].get("GID").is_some());
    }
}

//! `meshctl secret|config create|ls|inspect|rm`, shaped as docker's: a secret's data is never
//! printed (the managers never return it); a config's is, base64 in `inspect` as the Engine API
//! shows `Spec.Data`.

use crate::client::Client;
use crate::error::CliError;
use crate::listing::{Row, render};
use crate::output::{elapsed, human_duration, now_nanos, rfc3339, write_pretty_json};
use base64::Engine as _;
use mesh_control::api::secrets::{MAX_CONFIG_BYTES, MAX_SECRET_BYTES};
use mesh_control::cli::secret::{CreateArgs, PayloadCommand};
use mesh_proto::gather;
use mesh_proto::{
    Annotations, Config, CreateConfigRequest, CreateSecretRequest, GetConfigRequest,
    GetSecretRequest, ListConfigsRequest, ListSecretsRequest, Meta, RemoveConfigRequest,
    RemoveSecretRequest, Secret,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};

/// Which of the two nouns a command is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noun {
    Secret,
    Config,
}

pub async fn run(noun: Noun, command: PayloadCommand, host: &str) -> Result<(), CliError> {
    match command {
        PayloadCommand::Create(args) => {
            args.check()?;
            let max = match noun {
                Noun::Secret => MAX_SECRET_BYTES,
                Noun::Config => MAX_CONFIG_BYTES,
            };
            let data = read_data(&args.file, max)?;
            create(&mut super::connect(host).await?, noun, &args, data).await
        }
        PayloadCommand::Ls { quiet, format } => {
            let objects = list(&mut super::connect(host).await?, noun).await?;
            let json = format.unwrap_or(false);
            render_rows(
                &mut std::io::stdout(),
                noun,
                &rows(noun, &objects),
                quiet,
                json,
            )?;
            Ok(())
        }
        PayloadCommand::Inspect { pretty, names } => {
            inspect(&mut super::connect(host).await?, noun, &names, pretty).await
        }
        PayloadCommand::Rm { names } => rm(&mut super::connect(host).await?, noun, &names).await,
    }
}

/// The data from `file`, or from stdin for `-`; never more than `max` bytes are read (one more
/// tells that it is too large, which the spec check then says).
fn read_data(file: &str, max: usize) -> Result<Vec<u8>, CliError> {
    let limit = u64::try_from(max).unwrap_or(u64::MAX);
    let mut data = Vec::new();
    let read = if file == "-" {
        std::io::stdin().take(limit).read_to_end(&mut data)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_end(&mut data))
    };
    read.map_err(|e| {
        let from = if file == "-" {
            "STDIN".to_string()
        } else {
            format!("{file:?}")
        };
        CliError::Invalid(format!(
            "error reading content from {from}: {}",
            io_reason(&e)
        ))
    })?;
    Ok(data)
}

/// An I/O error's reason without the "(os error N)" tail.
fn io_reason(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

async fn create(
    client: &mut Client,
    noun: Noun,
    args: &CreateArgs,
    data: Vec<u8>,
) -> Result<(), CliError> {
    let id = match noun {
        Noun::Secret => {
            let spec = args.secret_spec(data)?;
            let request = CreateSecretRequest { spec: Some(spec) };
            client.control.create_secret(request).await?.into_inner().id
        }
        Noun::Config => {
            let spec = args.config_spec(data)?;
            let request = CreateConfigRequest { spec: Some(spec) };
            client.control.create_config(request).await?.into_inner().id
        }
    };
    writeln!(std::io::stdout(), "{id}")?;
    Ok(())
}

/// What `ls` and `inspect` show of either noun.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    id: String,
    meta: Meta,
    annotations: Annotations,
    /// A config's data; `None` for a secret.
    data: Option<Vec<u8>>,
}

fn from_secret(s: Secret) -> Shown {
    let spec = s.spec.unwrap_or_default();
    Shown {
        id: s.id,
        meta: s.meta.unwrap_or_default(),
        annotations: spec.annotations.unwrap_or_default(),
        data: None,
    }
}

fn from_config(c: Config) -> Shown {
    let spec = c.spec.unwrap_or_default();
    Shown {
        id: c.id,
        meta: c.meta.unwrap_or_default(),
        annotations: spec.annotations.unwrap_or_default(),
        data: Some(spec.data),
    }
}

async fn list(client: &mut Client, noun: Noun) -> Result<Vec<Shown>, CliError> {
    Ok(match noun {
        Noun::Secret => {
            let response = client.control.list_secrets(ListSecretsRequest {}).await?;
            gather(response.into_inner())
                .await?
                .secrets
                .into_iter()
                .map(from_secret)
                .collect()
        }
        Noun::Config => {
            let response = client.control.list_configs(ListConfigsRequest {}).await?;
            gather(response.into_inner())
                .await?
                .configs
                .into_iter()
                .map(from_config)
                .collect()
        }
    })
}

/// One line of `secret ls` (`ID NAME DRIVER CREATED UPDATED`) or `config ls` (no DRIVER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadRow {
    noun: Noun,
    id: String,
    name: String,
    created: String,
    updated: String,
    created_at: String,
    updated_at: String,
    labels: String,
}

const SECRET_HEADERS: &[&str] = &["ID", "NAME", "DRIVER", "CREATED", "UPDATED"];
const CONFIG_HEADERS: &[&str] = &["ID", "NAME", "CREATED", "UPDATED"];

impl Row for PayloadRow {
    const HEADERS: &'static [&'static str] = SECRET_HEADERS;
    fn cells(&self) -> Vec<String> {
        let mut cells = vec![self.id.clone(), self.name.clone()];
        if self.noun == Noun::Secret {
            cells.push(String::new());
        }
        cells.extend([self.created.clone(), self.updated.clone()]);
        cells
    }
    fn json(&self) -> Value {
        let mut value = json!({"ID": self.id, "Name": self.name, "CreatedAt": self.created_at,
                               "UpdatedAt": self.updated_at, "Labels": self.labels});
        if self.noun == Noun::Secret {
            value["Driver"] = json!("");
        }
        value
    }
    fn id(&self) -> &str {
        &self.id
    }
}

/// The rows of `ls`, sorted by name as docker sorts them.
pub fn rows(noun: Noun, objects: &[Shown]) -> Vec<PayloadRow> {
    let now = now_nanos();
    let ago = |t: i64| format!("{} ago", human_duration(elapsed(now, t)));
    let mut rows: Vec<PayloadRow> = objects
        .iter()
        .map(|o| {
            let labels: BTreeMap<_, _> = o.annotations.labels.iter().collect();
            PayloadRow {
                noun,
                id: o.id.clone(),
                name: o.annotations.name.clone(),
                created: ago(o.meta.created_at),
                updated: ago(o.meta.updated_at),
                created_at: rfc3339(o.meta.created_at),
                updated_at: rfc3339(o.meta.updated_at),
                labels: labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    rows
}

/// Renders `rows` with the noun's columns (`render` takes the secret's; a config has no DRIVER).
fn render_rows(
    out: &mut impl Write,
    noun: Noun,
    rows: &[PayloadRow],
    quiet: bool,
    json: bool,
) -> std::io::Result<()> {
    if noun == Noun::Secret || quiet || json {
        return render(out, rows, quiet, json);
    }
    let mut table = crate::output::Table::new(CONFIG_HEADERS);
    for row in rows {
        table.push(row.cells());
    }
    table.write(out)
}

/// The object as the Engine API's `GET /secrets/{id}` or `/configs/{id}` returns it.
pub fn engine_json(object: &Shown) -> Value {
    let labels: BTreeMap<_, _> = object.annotations.labels.iter().collect();
    let mut spec = json!({"Name": object.annotations.name, "Labels": labels});
    if let Some(data) = &object.data {
        spec["Data"] = json!(base64::engine::general_purpose::STANDARD.encode(data));
    }
    json!({
        "ID": object.id,
        "Version": {"Index": object.meta.version.as_ref().map_or(0, |v| v.index)},
        "CreatedAt": rfc3339(object.meta.created_at),
        "UpdatedAt": rfc3339(object.meta.updated_at),
        "Spec": spec,
    })
}

/// `inspect --pretty`, laid out as docker's.
pub fn pretty(noun: Noun, object: &Shown) -> String {
    let mut text = format!(
        "ID:              {}\nName:              {}\n",
        object.id, object.annotations.name
    );
    let labels: BTreeMap<_, _> = object.annotations.labels.iter().collect();
    if !labels.is_empty() {
        text.push_str("Labels:\n");
        for (k, v) in labels {
            if v.is_empty() {
                text.push_str(&format!(" - {k}\n"));
            } else {
                text.push_str(&format!(" - {k}={v}\n"));
            }
        }
    }
    if noun == Noun::Secret {
        text.push_str("Driver:            \n");
    }
    text.push_str(&format!(
        "Created at:        {}\nUpdated at:        {}\n",
        rfc3339(object.meta.created_at),
        rfc3339(object.meta.updated_at)
    ));
    if let Some(data) = &object.data {
        text.push_str("Data:\n");
        text.push_str(&String::from_utf8_lossy(data));
        if !data.ends_with(b"\n") {
            text.push('\n');
        }
    }
    text
}

async fn get(client: &mut Client, noun: Noun, reference: &str) -> Result<Shown, CliError> {
    let reference = reference.to_string();
    Ok(match noun {
        Noun::Secret => from_secret(
            client
                .control
                .get_secret(GetSecretRequest { reference })
                .await?
                .into_inner(),
        ),
        Noun::Config => from_config(
            client
                .control
                .get_config(GetConfigRequest { reference })
                .await?
                .into_inner(),
        ),
    })
}

async fn inspect(
    client: &mut Client,
    noun: Noun,
    references: &[String],
    pretty_output: bool,
) -> Result<(), CliError> {
    let mut found = Vec::with_capacity(references.len());
    for reference in references {
        found.push(get(client, noun, reference).await?);
    }
    let mut out = std::io::stdout();
    if pretty_output {
        let texts: Vec<String> = found.iter().map(|o| pretty(noun, o)).collect();
        write!(out, "{}", texts.join("\n\n"))?;
        return Ok(());
    }
    let values: Vec<Value> = found.iter().map(engine_json).collect();
    write_pretty_json(&mut out, &values)?;
    Ok(())
}

/// Removes every one it can, as docker does, and reports the failures together.
async fn rm(client: &mut Client, noun: Noun, references: &[String]) -> Result<(), CliError> {
    let mut errors = Vec::new();
    for reference in references {
        let result = match noun {
            Noun::Secret => client
                .control
                .remove_secret(RemoveSecretRequest {
                    secret_id: reference.clone(),
                })
                .await
                .map(drop),
            Noun::Config => client
                .control
                .remove_config(RemoveConfigRequest {
                    config_id: reference.clone(),
                })
                .await
                .map(drop),
        };
        match result {
            Ok(()) => writeln!(std::io::stdout(), "{reference}")?,
            Err(status) => errors.push(CliError::from(status).to_string()),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::Status(errors.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::Version;

    fn shown(data: Option<&[u8]>) -> Shown {
        Shown {
            id: "abc123".into(),
            meta: Meta {
                version: Some(Version { index: 11 }),
                created_at: 1_700_000_000_000_000_000,
                updated_at: 1_700_000_000_000_000_000,
            },
            annotations: Annotations {
                name: "db".into(),
                labels: [("env".to_string(), "prod".to_string())].into(),
            },
            data: data.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn inspect_has_the_engine_apis_shape() {
        let secret = engine_json(&shown(None));
        assert_eq!(secret["Version"]["Index"], 11);
        assert_eq!(secret["Spec"]["Name"], "db");
        assert_eq!(secret["Spec"]["Labels"]["env"], "prod");
        assert!(secret["Spec"].get("Data").is_none());
        assert!(
            secret["CreatedAt"]
                .as_str()
                .is_some_and(|t| t.starts_with("2023-11-14T"))
        );
        let config = engine_json(&shown(Some(b"port=80\n")));
        assert_eq!(config["Spec"]["Data"], "cG9ydD04MAo=");
        assert!(pretty(Noun::Config, &shown(Some(b"port=80\n"))).ends_with("Data:\nport=80\n"));
        assert!(pretty(Noun::Secret, &shown(None)).contains(" - env=prod\nDriver:"));
    }

    #[test]
    fn rows_have_dockers_columns() {
        let rows = rows(Noun::Secret, &[shown(None)]);
        assert_eq!(rows[0].cells().len(), SECRET_HEADERS.len());
        assert_eq!(rows[0].json()["Driver"], "");
        let mut out = Vec::new();
        let config_rows = super::rows(Noun::Config, &[shown(Some(b"x"))]);
        render_rows(&mut out, Noun::Config, &config_rows, false, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("ID") && !text.contains("DRIVER"), "{text}");
        assert!(text.contains("abc123") && text.contains("ago"), "{text}");
    }
}

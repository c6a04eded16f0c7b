//! `meshctl secret|config create|ls|inspect|rm`: the arguments, and the spec `create`'s describe
//! once the binary has read the data (from a file, or from stdin for `-`).

use super::flags::parse_label;
use super::{InputError, parse_format};
use clap::{Args, Subcommand};
use mesh_proto::{Annotations, ConfigSpec, SecretSpec};

use crate::api::secrets::{MAX_CONFIG_BYTES, MAX_SECRET_BYTES, validate_name};

/// The verbs of `secret` and of `config`, which take the same arguments.
#[derive(Subcommand, Debug)]
pub enum PayloadCommand {
    /// Create from a file or STDIN as content
    Create(CreateArgs),
    /// List them
    #[command(visible_alias = "list")]
    Ls {
        /// Only display IDs
        #[arg(short, long)]
        quiet: bool,
        /// Format output ("json")
        #[arg(long, value_parser = parse_format)]
        format: Option<bool>,
    },
    /// Display detailed information on one or more of them
    Inspect {
        /// Print the information in a human friendly format
        #[arg(long)]
        pretty: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove one or more of them
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Labels
    #[arg(short, long = "label", value_name = "K=V", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    pub name: String,
    /// The file to read the data from, or "-" for STDIN
    pub file: String,
}

impl CreateArgs {
    /// Checks the name and labels before any data is read.
    pub fn check(&self) -> Result<Annotations, InputError> {
        validate_name(&self.name).map_err(InputError::Invalid)?;
        let annotations = Annotations {
            name: self.name.clone(),
            labels: self.labels.iter().cloned().collect(),
        };
        crate::limits::labels("labels", &annotations.labels)?;
        Ok(annotations)
    }

    pub fn secret_spec(&self, data: Vec<u8>) -> Result<SecretSpec, InputError> {
        let annotations = self.check()?;
        check_size("secret", data.len(), MAX_SECRET_BYTES)?;
        Ok(SecretSpec {
            annotations: Some(annotations),
            data,
        })
    }

    pub fn config_spec(&self, data: Vec<u8>) -> Result<ConfigSpec, InputError> {
        let annotations = self.check()?;
        check_size("config", data.len(), MAX_CONFIG_BYTES)?;
        Ok(ConfigSpec {
            annotations: Some(annotations),
            data,
        })
    }
}

/// The data's size as the managers check it, said before sending (meshctl reads at most `max`
/// bytes, so the size of a larger file is not known here).
pub fn check_size(what: &str, len: usize, max: usize) -> Result<(), InputError> {
    if len == 0 || len >= max {
        return Err(InputError::Invalid(format!(
            "{what} data must be larger than 0 and less than {max} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(name: &str, labels: &[(&str, &str)]) -> CreateArgs {
        CreateArgs {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            name: name.into(),
            file: "-".into(),
        }
    }

    #[test]
    fn specs_are_checked_before_sending() {
        let spec = args("db_pass.v1", &[("env", "prod")])
            .secret_spec(b"hunter2".to_vec())
            .expect("valid");
        let a = spec.annotations.expect("annotations");
        assert_eq!(
            (a.name.as_str(), a.labels["env"].as_str()),
            ("db_pass.v1", "prod")
        );
        let cases: [(CreateArgs, Vec<u8>, &str); 5] = [
            (args("-bad", &[]), b"x".to_vec(), "invalid name"),
            (args("bad.", &[]), b"x".to_vec(), "invalid name"),
            (args(&"n".repeat(65), &[]), b"x".to_vec(), "invalid name"),
            (args("ok", &[]), Vec::new(), "larger than 0"),
            (
                args("ok", &[]),
                vec![7; MAX_SECRET_BYTES],
                "less than 512000",
            ),
        ];
        for (args, data, want) in cases {
            let err = args.secret_spec(data).expect_err(want).to_string();
            assert!(err.contains(want) && !err.contains('\n'), "{err}");
        }
        assert!(
            args("ok", &[])
                .config_spec(vec![7; MAX_SECRET_BYTES])
                .is_ok()
        );
        let err = args("ok", &[])
            .config_spec(vec![7; MAX_CONFIG_BYTES])
            .expect_err("too large");
        assert!(err.to_string().contains("less than 1024000"), "{err}");
    }
}

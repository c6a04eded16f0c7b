//! The secrets and configs the dispatcher sent this node, held in memory only (never in a state
//! file): a complete assignment set replaces them, an incremental one adds and forgets.

use std::collections::HashMap;

use mesh_proto::AssignmentsMessage;
use mesh_proto::assignments_message::Type;

/// Data by object id. `Debug` shows the ids, never the data.
#[derive(Default)]
pub struct Held {
    secrets: HashMap<String, Vec<u8>>,
    configs: HashMap<String, Vec<u8>>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("configs", &self.configs.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Held {
    /// Takes in what one (whole) assignment message says about secrets and configs.
    pub fn apply(&mut self, message: &AssignmentsMessage) {
        if message.r#type() == Type::Complete {
            self.secrets.clear();
            self.configs.clear();
        }
        for id in &message.remove_secrets {
            self.secrets.remove(id);
        }
        for id in &message.remove_configs {
            self.configs.remove(id);
        }
        for secret in &message.update_secrets {
            let data = secret
                .spec
                .as_ref()
                .map(|s| s.data.clone())
                .unwrap_or_default();
            self.secrets.insert(secret.id.clone(), data);
        }
        for config in &message.update_configs {
            let data = config
                .spec
                .as_ref()
                .map(|s| s.data.clone())
                .unwrap_or_default();
            self.configs.insert(config.id.clone(), data);
        }
    }

    pub fn secret(&self, id: &str) -> Option<&[u8]> {
        self.secrets.get(id).map(Vec::as_slice)
    }

    pub fn config(&self, id: &str) -> Option<&[u8]> {
        self.configs.get(id).map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::{Config, ConfigSpec, Secret, SecretSpec};

    fn secret(id: &str, data: &[u8]) -> Secret {
        Secret {
            id: id.into(),
            spec: Some(SecretSpec {
                data: data.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn complete_replaces_and_incremental_adds_and_forgets() {
        let mut held = Held::default();
        held.apply(&AssignmentsMessage {
            r#type: Type::Complete as i32,
            update_secrets: vec![secret("s1", b"one"), secret("s2", b"two")],
            update_configs: vec![Config {
                id: "c1".into(),
                spec: Some(ConfigSpec {
                    data: b"conf".to_vec(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(held.secret("s1"), Some(&b"one"[..]));
        assert_eq!(held.config("c1"), Some(&b"conf"[..]));
        held.apply(&AssignmentsMessage {
            r#type: Type::Incremental as i32,
            update_secrets: vec![secret("s3", b"three")],
            remove_secrets: vec!["s1".into()],
            remove_configs: vec!["c1".into()],
            ..Default::default()
        });
        assert_eq!(held.secret("s1"), None);
        assert_eq!(held.secret("s3"), Some(&b"three"[..]));
        assert_eq!(held.config("c1"), None);
        held.apply(&AssignmentsMessage {
            r#type: Type::Complete as i32,
            update_secrets: vec![secret("s2", b"two")],
            ..Default::default()
        });
        assert_eq!(
            (held.secret("s2").is_some(), held.secret("s3")),
            (true, None)
        );
        let shown = format!("{held:?}");
        assert!(
            shown.contains("s2") && !shown.contains("116, 119, 111"),
            "{shown}"
        );
    }
}

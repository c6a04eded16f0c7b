//! `Debug` for the messages that carry secrets — join tokens, the root CA's key, gossip keys,
//! agent session ids and the data of secrets and configs — showing every field but those, so that no `?message` in a log line can
//! carry one. `build.rs` leaves these messages' derived `Debug` out.

use std::fmt;

use crate::v1::*;

/// A secret as `Debug` shows it: whether it is set, never what it is.
struct Secret(bool);

impl Secret {
    fn of(value: impl AsRef<[u8]>) -> Self {
        Secret(!value.as_ref().is_empty())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0 { "<redacted>" } else { "<empty>" })
    }
}

impl fmt::Debug for JoinTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinTokens")
            .field("worker", &Secret::of(&self.worker))
            .field("manager", &Secret::of(&self.manager))
            .finish()
    }
}

impl fmt::Debug for RootCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCa")
            .field("ca_cert", &self.ca_cert.len())
            .field("ca_key", &Secret::of(&self.ca_key))
            .field("ca_cert_digest", &self.ca_cert_digest)
            .field("join_tokens", &self.join_tokens)
            .field("previous_ca_certs", &self.previous_ca_certs.len())
            .field("rotation", &self.rotation)
            .finish()
    }
}

impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GossipKey")
            .field("id", &self.id)
            .field("key", &Secret::of(&self.key))
            .field("created_at", &self.created_at)
            .finish()
    }
}

impl fmt::Debug for IssueNodeCertificateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssueNodeCertificateRequest")
            .field("csr", &self.csr.len())
            .field("token", &Secret::of(&self.token))
            .field("addr", &self.addr)
            .field("availability", &self.availability)
            .finish()
    }
}

impl fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinRequest")
            .field("remote_addr", &self.remote_addr)
            .field("token", &Secret::of(&self.token))
            .field("advertise_addr", &self.advertise_addr)
            .field("listen_addr", &self.listen_addr)
            .field("availability", &self.availability)
            .finish()
    }
}

impl fmt::Debug for SessionMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionMessage")
            .field("session_id", &Secret::of(&self.session_id))
            .field("node_id", &self.node_id)
            .field("managers", &self.managers)
            .field("heartbeat_period_ns", &self.heartbeat_period_ns)
            .field("role", &self.role)
            .field("ca_rotation", &self.ca_rotation)
            .field("gossip_keys", &self.gossip_keys)
            .field("reports_are_heartbeats", &self.reports_are_heartbeats)
            .finish()
    }
}

impl fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSpec")
            .field("annotations", &self.annotations)
            .field("data", &Secret::of(&self.data))
            .finish()
    }
}

/// A config's data is not secret, but can be large and may hold what an operator would rather
/// not see in a log: its length only.
impl fmt::Debug for ConfigSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigSpec")
            .field("annotations", &self.annotations)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// A request that carries nothing but the session id.
macro_rules! session_only {
    ($($message:ident),*) => {$(
        impl fmt::Debug for $message {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($message))
                    .field("session_id", &Secret::of(&self.session_id))
                    .finish()
            }
        }
    )*};
}

session_only!(
    HeartbeatRequest,
    AssignmentsRequest,
    LogSubscriptionsRequest
);

impl fmt::Debug for UpdateTaskStatusRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateTaskStatusRequest")
            .field("session_id", &Secret::of(&self.session_id))
            .field("updates", &self.updates)
            .finish()
    }
}

impl fmt::Debug for PublishLogsMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishLogsMessage")
            .field("session_id", &Secret::of(&self.session_id))
            .field("subscription_id", &self.subscription_id)
            .field("messages", &self.messages)
            .field("close", &self.close)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str =
        "SWMTKN-1-0123456789abcdefghijklmnopqrstuvwxyz0123456789abcd-s3cr3ts3cr3ts3cr3ts3cr3ts3";
    const SESSION: &str = "sessionidsessionidsession";
    const KEY: &[u8] = b"\x8b\x8b\x8b\x8b\x8b\x8b\x8b\x8b-gossip-key-bytes";

    #[test]
    fn secrets_never_show_in_debug_output() {
        let key = GossipKey {
            id: 7,
            key: KEY.to_vec(),
            created_at: 1,
        };
        let tokens = JoinTokens {
            worker: TOKEN.into(),
            manager: TOKEN.into(),
        };
        let secret = crate::v1::Secret {
            id: "secret-1".into(),
            spec: Some(SecretSpec {
                annotations: Some(Annotations {
                    name: "db_password".into(),
                    ..Default::default()
                }),
                data: KEY.to_vec(),
            }),
            ..Default::default()
        };
        let cluster = Cluster {
            id: "cluster-1".into(),
            root_ca: Some(RootCa {
                ca_key: KEY.to_vec(),
                ca_cert_digest: "sha256:abc".into(),
                join_tokens: Some(tokens.clone()),
                ..Default::default()
            }),
            gossip_keys: vec![key.clone()],
            ..Default::default()
        };
        let printed = [
            format!("{cluster:?}"),
            format!("{tokens:#?}"),
            format!(
                "{:?}",
                GetJoinTokensResponse {
                    tokens: Some(tokens.clone()),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                JoinRequest {
                    remote_addr: "10.0.0.1:2377".into(),
                    token: TOKEN.into(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                IssueNodeCertificateRequest {
                    token: TOKEN.into(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                SessionMessage {
                    session_id: SESSION.into(),
                    node_id: "node-1".into(),
                    gossip_keys: vec![key],
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                HeartbeatRequest {
                    session_id: SESSION.into()
                }
            ),
            format!(
                "{:?}",
                AssignmentsRequest {
                    session_id: SESSION.into()
                }
            ),
            format!(
                "{:?}",
                LogSubscriptionsRequest {
                    session_id: SESSION.into()
                }
            ),
            format!(
                "{:?}",
                UpdateTaskStatusRequest {
                    session_id: SESSION.into(),
                    updates: Vec::new()
                }
            ),
            format!(
                "{:?}",
                PublishLogsMessage {
                    session_id: SESSION.into(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                AssignmentsMessage {
                    update_secrets: vec![secret.clone()],
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                CreateSecretRequest {
                    spec: secret.spec.clone()
                }
            ),
        ];
        let key_bytes = format!("{:?}", KEY.to_vec());
        let config = format!(
            "{:?}",
            Config {
                spec: Some(ConfigSpec {
                    data: KEY.to_vec(),
                    ..Default::default()
                }),
                ..Default::default()
            }
        );
        assert!(
            !config.contains(key_bytes.trim_matches(['[', ']'])),
            "{config}"
        );
        for text in &printed {
            assert!(text.contains("<redacted>"), "{text}");
            for secret in ["s3cr3t", SESSION, key_bytes.trim_matches(['[', ']'])] {
                assert!(!text.contains(secret), "{secret:?} shows in {text}");
            }
        }
        // What is not secret still shows.
        assert!(printed[0].contains("cluster-1") && printed[0].contains("sha256:abc"));
        assert!(printed[3].contains("10.0.0.1:2377"));
        assert!(printed[5].contains("node-1"));
    }
}

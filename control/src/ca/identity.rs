//! Node identities: who a certificate says its holder is (node id, role, cluster), read back with
//! x509-parser from a peer's verified certificate or from the node's own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::error::CaError;

/// The organizational unit of a manager's certificate, and the DNS name a manager serves as.
pub const MANAGER_OU: &str = "mesh-manager";
/// The organizational unit of a worker's certificate, and its DNS name.
pub const WORKER_OU: &str = "mesh-worker";

/// How a manager certificate names its holder's Raft id: a URI subject alternative name.
const RAFT_ID_URI_PREFIX: &str = "urn:mesh:raft:";

/// The URI a manager certificate carries for Raft id `raft_id`.
pub fn raft_id_uri(raft_id: u64) -> String {
    format!("{RAFT_ID_URI_PREFIX}{raft_id}")
}

/// The role a node certificate grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Manager,
    Worker,
}

impl Role {
    /// The certificate's OU and DNS name for this role.
    pub fn as_ou(self) -> &'static str {
        match self {
            Role::Manager => MANAGER_OU,
            Role::Worker => WORKER_OU,
        }
    }

    /// The role an OU stands for.
    pub fn from_ou(ou: &str) -> Option<Self> {
        match ou {
            MANAGER_OU => Some(Role::Manager),
            WORKER_OU => Some(Role::Worker),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        })
    }
}

impl From<mesh_proto::NodeRole> for Role {
    fn from(role: mesh_proto::NodeRole) -> Self {
        match role {
            mesh_proto::NodeRole::Manager => Role::Manager,
            mesh_proto::NodeRole::Worker => Role::Worker,
        }
    }
}

impl From<Role> for mesh_proto::NodeRole {
    fn from(role: Role) -> Self {
        match role {
            Role::Manager => mesh_proto::NodeRole::Manager,
            Role::Worker => mesh_proto::NodeRole::Worker,
        }
    }
}

/// What a node certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The subject's CN.
    pub node_id: String,
    /// From the subject's OU.
    pub role: Role,
    /// The subject's O.
    pub cluster_id: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The certificate's serial number, as its DER integer bytes.
    pub serial: Vec<u8>,
    /// A manager's Raft id, from its `urn:mesh:raft:<id>` name; `None` in a worker's.
    pub raft_id: Option<u64>,
}

impl NodeIdentity {
    /// Reads the identity from a DER certificate. It does not verify the certificate: callers use
    /// it on certificates rustls already verified, or on the node's own.
    pub fn from_der(der: &[u8]) -> Result<Self, CaError> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| CaError::invalid("certificate", e.to_string()))?;
        let subject = cert.subject();
        let single = |what: &str, mut values: Vec<&str>| match values.len() {
            1 => Ok(values.remove(0).to_owned()),
            n => Err(CaError::NotNodeCertificate(format!(
                "expected one {what} in the subject, found {n}"
            ))),
        };
        let node_id = single(
            "CN",
            subject
                .iter_common_name()
                .filter_map(|a| a.as_str().ok())
                .collect(),
        )?;
        let ou = single(
            "OU",
            subject
                .iter_organizational_unit()
                .filter_map(|a| a.as_str().ok())
                .collect(),
        )?;
        let cluster_id = single(
            "O",
            subject
                .iter_organization()
                .filter_map(|a| a.as_str().ok())
                .collect(),
        )?;
        let role = Role::from_ou(&ou)
            .ok_or_else(|| CaError::NotNodeCertificate(format!("unknown role OU {ou:?}")))?;
        if node_id.is_empty() {
            return Err(CaError::NotNodeCertificate("empty node id".into()));
        }
        let validity = cert.validity();
        let raft_ids: Vec<u64> = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .into_iter()
            .flat_map(|san| san.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) => uri.strip_prefix(RAFT_ID_URI_PREFIX),
                _ => None,
            })
            .map(|id| {
                id.parse::<u64>().map_err(|_| {
                    CaError::NotNodeCertificate(format!("malformed raft id URI {id:?}"))
                })
            })
            .collect::<Result<_, _>>()?;
        let raft_id = match raft_ids.as_slice() {
            [] => None,
            [id] if role == Role::Manager && *id != 0 => Some(*id),
            _ => {
                return Err(CaError::NotNodeCertificate(format!(
                    "a {role} certificate with raft ids {raft_ids:?}"
                )));
            }
        };
        Ok(Self {
            node_id,
            role,
            cluster_id,
            not_before: to_system_time(validity.not_before.timestamp()),
            not_after: to_system_time(validity.not_after.timestamp()),
            serial: cert.raw_serial().to_vec(),
            raft_id,
        })
    }

    /// Whether the certificate should be renewed at `now`: once more than two thirds of its
    /// validity have elapsed (SwarmKit picks a random point between one half and four fifths; a
    /// fixed point keeps this deterministic), or when it has expired.
    pub fn needs_renewal(&self, now: SystemTime) -> bool {
        now >= self.renew_at()
    }

    /// The moment from which [`needs_renewal`](Self::needs_renewal) answers true.
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO);
        self.not_before + lifetime * 2 / 3
    }
}

fn to_system_time(timestamp: i64) -> SystemTime {
    match u64::try_from(timestamp) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH - Duration::from_secs(timestamp.unsigned_abs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(lifetime_secs: u64) -> NodeIdentity {
        let not_before = UNIX_EPOCH + Duration::from_secs(1_000_000);
        NodeIdentity {
            node_id: "n1".into(),
            role: Role::Worker,
            cluster_id: "c1".into(),
            not_before,
            not_after: not_before + Duration::from_secs(lifetime_secs),
            serial: vec![1],
            raft_id: None,
        }
    }

    #[test]
    fn renewal_after_two_thirds_of_the_validity() {
        let id = identity(90);
        let at = |secs| id.not_before + Duration::from_secs(secs);
        let cases = [
            (0, false),
            (30, false),
            (59, false),
            (60, true),
            (89, true),
            (500, true),
        ];
        for (elapsed, want) in cases {
            assert_eq!(id.needs_renewal(at(elapsed)), want, "after {elapsed}s");
        }
    }

    #[test]
    fn roles_map_to_proto_and_ou() {
        for role in [Role::Manager, Role::Worker] {
            assert_eq!(Role::from(mesh_proto::NodeRole::from(role)), role);
            assert_eq!(Role::from_ou(role.as_ou()), Some(role));
        }
        assert_eq!(Role::from_ou("swarm-manager"), None);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(NodeIdentity::from_der(b"garbage").is_err());
    }
}

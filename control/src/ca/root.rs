//! The cluster's root CA: an ECDSA P-256 self-signed certificate kept (with its key) in the
//! replicated store, which signs every node certificate with the node id and role in its subject.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use ring::digest::{SHA256, digest};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::error::CaError;
use super::identity::{Role, raft_id_uri};

/// The root CA certificate's common name.
pub const ROOT_CA_CN: &str = "mesh-root-ca";
/// How long a root CA is valid.
pub const ROOT_CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// How far certificates are backdated, to tolerate clocks a little behind the CA's.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Who a node certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSubject<'a> {
    pub node_id: &'a str,
    pub role: Role,
    pub cluster_id: &'a str,
    /// A manager's Raft id, carried as the URI `urn:mesh:raft:<id>`; ignored for a worker.
    pub raft_id: Option<u64>,
}

/// A root CA able to sign node certificates.
pub struct RootCa {
    cert_pem: String,
    cert_der: Vec<u8>,
    key: KeyPair,
}

impl std::fmt::Debug for RootCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootCa")
            .field("digest", &self.digest())
            .finish_non_exhaustive()
    }
}

impl RootCa {
    /// A new self-signed root CA for the cluster (valid for 20 years).
    pub fn generate(cluster_id: &str) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, ROOT_CA_CN);
        if !cluster_id.is_empty() {
            params
                .distinguished_name
                .push(DnType::OrganizationName, cluster_id);
        }
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        params.not_before = asn1_time(now - BACKDATE)?.to_datetime();
        params.not_after = asn1_time(now + ROOT_CA_VALIDITY)?.to_datetime();
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key,
        })
    }

    /// Loads a root CA from its certificate and PKCS#8 key; refuses a certificate that is not a
    /// CA or a key that does not belong to it.
    pub fn from_pem(
        cert_pem: impl AsRef<[u8]>,
        key_pem: impl AsRef<[u8]>,
    ) -> Result<Self, CaError> {
        let cert_pem = std::str::from_utf8(cert_pem.as_ref())
            .map_err(|_| CaError::invalid("root CA certificate PEM", "not text"))?;
        let key_pem = std::str::from_utf8(key_pem.as_ref())
            .map_err(|_| CaError::invalid("root CA key PEM", "not text"))?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| CaError::invalid("root CA certificate PEM", e))?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::invalid("root CA key PEM", e))?;
        let (_, cert) = X509Certificate::from_der(&cert_der)
            .map_err(|e| CaError::invalid("root CA certificate", e))?;
        if !cert.is_ca() {
            return Err(CaError::invalid(
                "root CA certificate",
                "not a CA certificate",
            ));
        }
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::invalid(
                "root CA key",
                "it does not belong to the certificate",
            ));
        }
        Ok(Self {
            cert_pem: cert_pem.trim_end().to_owned() + "\n",
            cert_der: cert_der.to_vec(),
            key,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA's private key as PKCS#8 PEM (to store; never send it to a worker).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// `sha256:<hex>` of the certificate's DER, for display.
    pub fn digest(&self) -> String {
        let sum = digest(&SHA256, &self.cert_der);
        let hex: String = sum.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }

    /// Signs a node certificate for the key in `csr_der` (whose signature is checked). Everything
    /// else in the request is ignored: the subject is CN=`node_id`, OU=`mesh-manager|mesh-worker`,
    /// O=`cluster_id`, the SANs the role's DNS name and the node id, the EKUs server and client
    /// authentication. Returns the certificate as PEM.
    pub fn sign_node(
        &self,
        csr_der: &[u8],
        subject: &NodeSubject<'_>,
        validity: Duration,
    ) -> Result<String, CaError> {
        let NodeSubject {
            node_id,
            role,
            cluster_id,
            raft_id,
        } = *subject;
        if node_id.is_empty() || cluster_id.is_empty() {
            return Err(CaError::invalid(
                "node certificate request",
                "node id and cluster id must not be empty",
            ));
        }
        let mut csr = CertificateSigningRequestParams::from_der(&csr_der.into())
            .map_err(|e| CaError::invalid("certificate signing request", e))?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, node_id);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, role.as_ou());
        params
            .distinguished_name
            .push(DnType::OrganizationName, cluster_id);
        params.subject_alt_names = vec![
            SanType::DnsName(role.as_ou().try_into()?),
            SanType::DnsName(node_id.try_into()?),
        ];
        if let (Role::Manager, Some(raft_id)) = (role, raft_id.filter(|id| *id != 0)) {
            params
                .subject_alt_names
                .push(SanType::URI(raft_id_uri(raft_id).try_into()?));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        params.not_before = asn1_time(now - BACKDATE)?.to_datetime();
        params.not_after = asn1_time(now + validity)?.to_datetime();
        csr.params = params;
        let issuer = Issuer::from_ca_cert_der(&self.cert_der.as_slice().into(), &self.key)?;
        Ok(csr.signed_by(&issuer)?.pem())
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes = rand::random::<[u8; 16]>();
    bytes[0] &= 0x7f; // positive, and never a leading zero byte to strip
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// A `SystemTime` as x509-parser's time, whose `to_datetime` is the date type rcgen takes.
fn asn1_time(at: SystemTime) -> Result<x509_parser::time::ASN1Time, CaError> {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CaError::invalid("certificate validity", "before 1970"))?
        .as_secs();
    let secs = i64::try_from(secs)
        .map_err(|_| CaError::invalid("certificate validity", "too far ahead"))?;
    x509_parser::time::ASN1Time::from_timestamp(secs)
        .map_err(|e| CaError::invalid("certificate validity", e))
}

//! The 2377 transport: a node's TLS identity and the rustls configurations built from it (always
//! on the ring provider). The listener, the dialers and the authorization helpers live in their
//! own modules and are re-exported here, so `ca::tls::*` is the whole transport.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

pub use super::authz::{
    Caller, caller, is_local, peer, require_local_or_manager, require_manager, require_node,
};
pub use super::client::{
    CONNECT_TIMEOUT, connect, connect_lazy, connect_with_roots, fetch_root_ca,
};
use super::error::CaError;
use super::identity::{MANAGER_OU, NodeIdentity};
pub use super::server::{PeerInfo, TlsConnection, TlsServer};

/// The DNS name every manager's certificate carries and every client verifies.
pub const MANAGER_SERVER_NAME: &str = MANAGER_OU;

const ALPN_H2: &[u8] = b"h2";

/// A node's certificate chain and key, and the roots it trusts (several during a CA rotation).
#[derive(Debug)]
pub struct TlsIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub roots: Vec<CertificateDer<'static>>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            roots: self.roots.clone(),
        }
    }
}

impl TlsIdentity {
    /// Reads the node certificate (optionally followed by intermediates), its key and the trusted
    /// roots from PEM.
    pub fn from_pem(
        cert_pem: impl AsRef<[u8]>,
        key_pem: impl AsRef<[u8]>,
        roots_pem: impl AsRef<[u8]>,
    ) -> Result<Self, CaError> {
        let chain = certs_from_pem(cert_pem.as_ref(), "node certificate PEM")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_ref())
            .map_err(|e| CaError::invalid("node key PEM", e))?;
        let roots = certs_from_pem(roots_pem.as_ref(), "root CA PEM")?;
        Ok(Self { chain, key, roots })
    }

    /// What the node's own certificate says (node id, role, cluster, validity).
    pub fn node_identity(&self) -> Result<NodeIdentity, CaError> {
        let leaf = self
            .chain
            .first()
            .ok_or_else(|| CaError::invalid("node certificate PEM", "no certificate"))?;
        NodeIdentity::from_der(leaf)
    }
}

/// Every certificate in a PEM bundle; an empty bundle is an error.
pub fn certs_from_pem(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::invalid(what, e))?;
    if certs.is_empty() {
        return Err(CaError::invalid(what, "no certificate found"));
    }
    Ok(certs)
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn root_store(roots: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, CaError> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store
            .add(root.clone())
            .map_err(|e| CaError::invalid("root CA certificate", e))?;
    }
    Ok(Arc::new(store))
}

/// The 2377 server: presents the node's chain and asks for a client certificate without requiring
/// one (a joining node has none yet). A presented certificate must prove its key in the
/// handshake, but its chain is judged after it (by the returned verifier, against the roots), so
/// that a certificate of no trust ends in a gRPC refusal that says so rather than in a failed
/// handshake that says nothing.
pub(crate) fn server_config(
    identity: &TlsIdentity,
) -> Result<(ServerConfig, Arc<dyn ClientCertVerifier>), CaError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(root_store(&identity.roots)?, provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| CaError::Verifier(e.to_string()))?;
    let handshake = Arc::new(ChainJudgedLater {
        inner: verifier.clone(),
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(handshake)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok((config, verifier))
}

/// A client certificate verifier for the handshake that checks the client's proof of its key
/// but leaves the chain to be judged afterwards (see [`server_config`]).
#[derive(Debug)]
struct ChainJudgedLater {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for ChainJudgedLater {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client that verifies the server against `roots` (and the name `mesh-manager`), presenting
/// `client` (chain and key) when given.
pub(crate) fn client_config(
    roots: &[CertificateDer<'static>],
    client: Option<&TlsIdentity>,
) -> Result<ClientConfig, CaError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(roots)?);
    let mut config = match client {
        Some(identity) => {
            builder.with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// A client that accepts any server certificate: only for fetching the root CA during a join,
/// whose answer is then checked against the join token's digest before anything else is sent.
pub(crate) fn bootstrap_client_config() -> Result<ClientConfig, CaError> {
    let provider = provider();
    let verifier = Arc::new(AcceptAnyServerCert {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// Trusts any certificate chain, but still checks the handshake signature against it.
#[derive(Debug)]
struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

//! A throw-away CA and server certificate, and rustls configs built on them.

use std::sync::Arc;

use lkl_netstack::tls;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{CipherSuite, ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};

pub struct TestPki {
    pub ca_pem: String,
    pub ca_der: CertificateDer<'static>,
    pub server_pem: String,
    pub server_key_pem: String,
    server_der: CertificateDer<'static>,
    server_key_der: Vec<u8>,
}

impl TestPki {
    /// A CA, and a server certificate it signs for `names` (DNS names or IPs).
    pub fn new(names: &[&str]) -> TestPki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names, or OpenSSL takes the server certificate for self-signed.
        ca_params.distinguished_name = DistinguishedName::new();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "knic test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut server_params = CertificateParams::new(names).unwrap();
        server_params.distinguished_name = DistinguishedName::new();
        server_params
            .distinguished_name
            .push(DnType::CommonName, "knic test server");
        let server = server_params.signed_by(&server_key, &ca).unwrap();
        TestPki {
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            server_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
            server_der: server.der().clone(),
            server_key_der: server_key.serialize_der(),
        }
    }
}

/// Restricts the kTLS provider to one suite (None: all it has).
fn provider(suite: Option<CipherSuite>) -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = tls::crypto_provider();
    if let Some(suite) = suite {
        provider.cipher_suites.retain(|s| s.suite() == suite);
        assert!(!provider.cipher_suites.is_empty(), "{suite:?} not offered");
    }
    Arc::new(provider)
}

pub fn server_config(
    pki: &TestPki,
    versions: &[&'static SupportedProtocolVersion],
    suite: Option<CipherSuite>,
) -> Arc<ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key_der.clone()));
    let mut config = ServerConfig::builder_with_provider(provider(suite))
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.server_der.clone()], key)
        .unwrap();
    config.enable_secret_extraction = true;
    Arc::new(config)
}

pub fn client_config(
    pki: &TestPki,
    versions: &[&'static SupportedProtocolVersion],
    suite: Option<CipherSuite>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let mut config = ClientConfig::builder_with_provider(provider(suite))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.enable_secret_extraction = true;
    Arc::new(config)
}

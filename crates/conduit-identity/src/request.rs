//! The proxy's side of identity: a private key made in memory, never written anywhere,
//! and the certificate signing request for its identity name.

use rcgen::{CertificateParams, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};

/// A key and the identity it is for.
pub struct LocalKey {
    key: KeyPair,
    name: String,
}

impl LocalKey {
    /// A fresh ECDSA P-256 key for identity `name`.
    pub fn generate(name: &str) -> Result<LocalKey, rcgen::Error> {
        Ok(LocalKey {
            key: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?,
            name: name.to_string(),
        })
    }

    /// The identity name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A CSR for the identity, in DER.
    pub fn csr_der(&self) -> Result<Vec<u8>, rcgen::Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = crate::identity_subject(&self.name);
        params.subject_alt_names = vec![SanType::DnsName(self.name.as_str().try_into()?)];
        Ok(params.serialize_request(&self.key)?.der().to_vec())
    }

    /// The private key in PKCS#8 DER, for the TLS stack.
    pub fn key_der(&self) -> Vec<u8> {
        self.key.serialize_der()
    }
}

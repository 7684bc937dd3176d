//! The mesh's trust anchors as TLS sees them: the one place that turns their PEM into
//! the root store both ends of mesh TLS (proxies, and the controller when it taps) check
//! peers' certificates against.

use rustls::{
    pki_types::{pem::PemObject, CertificateDer},
    RootCertStore,
};

/// Why trust anchors could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AnchorsError {
    #[error("the trust anchors are not PEM certificates: {0}")]
    NotPem(String),
    #[error("the trust anchors hold no certificate")]
    Empty,
}

/// The certificates of `pem`, as roots to verify peers against.
pub fn root_store(pem: &str) -> Result<RootCertStore, AnchorsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| AnchorsError::NotPem(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| AnchorsError::NotPem(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(AnchorsError::Empty);
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reads_anchors_and_names_what_is_wrong() {
        let d = Duration::from_secs(3600);
        let files = crate::ca::generate(d, d).unwrap();
        assert_eq!(root_store(&files.anchor_pem).unwrap().len(), 1);
        assert!(matches!(root_store(""), Err(AnchorsError::Empty)));
        let broken = files.anchor_pem.replace("MII", "!!!");
        assert!(
            matches!(root_store(&broken), Err(AnchorsError::NotPem(_))),
            "{:?}",
            root_store(&broken)
        );
    }
}

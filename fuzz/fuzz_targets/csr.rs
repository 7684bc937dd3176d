//! The issuer's check of a proxy's certificate request (`conduit-identity`'s `ca.rs`):
//! the input is an identity name, a NUL byte, then the CSR in DER, as the Identity API
//! receives them. Checks that the issuer signs only for a real identity name and only a
//! CSR that names exactly that identity, and that what it signs is a workload (not a CA)
//! certificate for that identity, signed by the issuer.
#![no_main]

use conduit_identity::{
    ca::{self, Issuer},
    cert_identity, parse_identity,
};
use libfuzzer_sys::fuzz_target;
use std::{sync::LazyLock, time::Duration};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// One issuer for the whole run: making one is far slower than checking a request.
static ISSUER: LazyLock<(Issuer, Vec<u8>)> = LazyLock::new(|| {
    let files = ca::generate(DAY, DAY).expect("a trust anchor and issuer are made");
    let der = ca::pem_der(&files.issuer_cert_pem).expect("the issuer is PEM");
    let issuer = Issuer::from_pem(&files.issuer_cert_pem, &files.issuer_key_pem)
        .expect("a generated issuer is usable");
    (issuer, der)
});

fuzz_target!(|data: &[u8]| {
    let Some(nul) = data.iter().position(|b| *b == 0) else {
        return;
    };
    let Ok(identity) = std::str::from_utf8(&data[..nul]) else {
        return;
    };
    let csr = &data[nul + 1..];
    let (issuer, issuer_der) = &*ISSUER;
    let Ok(certified) = issuer.certify(csr, identity, Duration::from_secs(3600)) else {
        return;
    };
    assert!(
        parse_identity(identity).is_some(),
        "signed for {identity:?}"
    );
    assert_eq!(
        cert_identity(&certified.leaf_der).as_deref(),
        Some(identity),
        "the certificate names another identity than the one asked for"
    );
    assert_eq!(&certified.issuer_der, issuer_der);
    let (_, leaf) =
        x509_parser::parse_x509_certificate(&certified.leaf_der).expect("the issuer writes X.509");
    let (_, issuer_cert) =
        x509_parser::parse_x509_certificate(issuer_der).expect("the issuer is X.509");
    assert!(!leaf.is_ca(), "a workload certificate is a CA");
    leaf.verify_signature(Some(issuer_cert.public_key()))
        .expect("the issuer signed the certificate");
});

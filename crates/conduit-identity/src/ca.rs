//! The certificate authority: a trust anchor (root) made once, an issuer certificate it
//! signs, and the issuer signing proxies' CSRs. The control plane holds only the issuer:
//! the anchor's key is dropped as soon as the issuer is signed.

use crate::parse_identity;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer as RcgenIssuer, KeyPair, KeyUsagePurpose,
    SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use std::time::Duration;
use time::OffsetDateTime;

/// PEM files of a trust anchor and an issuer it signed.
#[derive(Clone, Debug)]
pub struct TrustFiles {
    /// The anchor's certificate, what every proxy trusts.
    pub anchor_pem: String,
    /// The issuer's certificate and key, what the controller signs with.
    pub issuer_cert_pem: String,
    pub issuer_key_pem: String,
}

/// Why a CA operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("the certificate signing request is malformed or its signature is wrong")]
    MalformedCsr,
    #[error("the certificate signing request must name exactly one DNS identity, {expected:?}; it names {found:?}")]
    NameMismatch {
        expected: String,
        found: Vec<String>,
    },
    #[error("{0:?} is not an identity name (<serviceaccount>.<namespace>.serviceaccount.identity.conduit.cluster.local)")]
    NotAnIdentity(String),
    #[error("the key must be ECDSA P-256")]
    WrongKeyType,
    #[error("the issuer certificate or key cannot be used: {0}")]
    BadIssuer(String),
    #[error("the trust anchors and issuer do not fit together: {0}")]
    BadTrust(String),
    #[error("signing failed: {0}")]
    Signing(#[from] rcgen::Error),
}

fn ca_params(common_name: &str, valid_for: Duration, path_len: u8) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + valid_for;
    p
}

/// Makes a new trust anchor valid for `anchor_life` and an issuer valid for `issuer_life`.
pub fn generate(anchor_life: Duration, issuer_life: Duration) -> Result<TrustFiles, CaError> {
    let anchor_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let anchor_params = ca_params("root.identity.conduit.cluster.local", anchor_life, 1);
    let anchor = anchor_params.self_signed(&anchor_key)?;
    let issuer_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut issuer_params = ca_params("identity.conduit.cluster.local", issuer_life, 0);
    issuer_params.use_authority_key_identifier_extension = true;
    let issuer =
        issuer_params.signed_by(&issuer_key, &RcgenIssuer::new(anchor_params, anchor_key))?;
    Ok(TrustFiles {
        anchor_pem: anchor.pem(),
        issuer_cert_pem: issuer.pem(),
        issuer_key_pem: issuer_key.serialize_pem(),
    })
}

impl TrustFiles {
    /// Checks files a user brought: PEM certificates for the anchors; an unexpired CA
    /// certificate for the issuer, signed by one of the anchors, whose key is the given
    /// ECDSA P-256 key. Every refusal says which part is wrong.
    pub fn check(&self) -> Result<(), CaError> {
        let bad = |m: String| CaError::BadTrust(m);
        let anchors = pem::parse_many(&self.anchor_pem)
            .map_err(|e| bad(format!("the trust anchors are not PEM: {e}")))?;
        let anchors: Vec<_> = anchors
            .iter()
            .filter(|p| p.tag() == "CERTIFICATE")
            .map(|p| p.contents().to_vec())
            .collect();
        if anchors.is_empty() {
            return Err(bad("the trust anchors file holds no certificate".into()));
        }
        let parsed: Vec<_> = anchors
            .iter()
            .map(|der| x509_parser::parse_x509_certificate(der).map(|(_, c)| c))
            .collect::<Result<_, _>>()
            .map_err(|e| bad(format!("a trust anchor is not an X.509 certificate: {e}")))?;
        let issuer_der = pem_der(&self.issuer_cert_pem)
            .map_err(|e| bad(format!("the issuer certificate is {e}")))?;
        let (_, issuer) = x509_parser::parse_x509_certificate(&issuer_der)
            .map_err(|e| bad(format!("the issuer certificate is not X.509: {e}")))?;
        if !issuer.is_ca() {
            return Err(bad(
                "the issuer certificate is not a CA (it needs basicConstraints CA:TRUE)".into(),
            ));
        }
        if !issuer.validity().is_valid() {
            return Err(bad(format!(
                "the issuer certificate is not valid now (valid {} to {})",
                issuer.validity().not_before,
                issuer.validity().not_after
            )));
        }
        if !parsed
            .iter()
            .any(|a| issuer.verify_signature(Some(a.public_key())).is_ok())
        {
            return Err(bad(
                "the issuer certificate is not signed by any of the trust anchors".into(),
            ));
        }
        let key = KeyPair::from_pem(&self.issuer_key_pem)
            .map_err(|e| bad(format!("the issuer key is not a PEM private key: {e}")))?;
        if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(CaError::WrongKeyType);
        }
        if rcgen::PublicKeyData::subject_public_key_info(&key) != issuer.public_key().raw {
            return Err(bad(
                "the issuer key does not belong to the issuer certificate".into(),
            ));
        }
        Ok(())
    }
}

/// A serving certificate for `dns_names`, valid for `life`, and the self-signed CA that
/// signed it (whose key is dropped): what an admission webhook needs, PEM encoded as
/// `(ca, certificate, key)`.
pub fn serving_certificate(
    dns_names: &[String],
    life: Duration,
) -> Result<(String, String, String), CaError> {
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let ca_params = ca_params("webhook.conduit.cluster.local", life, 0);
    let ca = ca_params.self_signed(&ca_key)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut leaf = CertificateParams::new(dns_names.to_vec())?;
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = OffsetDateTime::now_utc();
    leaf.not_before = now - time::Duration::minutes(5);
    leaf.not_after = now + life;
    let cert = leaf.signed_by(&key, &RcgenIssuer::new(ca_params, ca_key))?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

/// When the first certificate of `pem` stops being valid.
pub fn not_after(pem: &str) -> Result<std::time::SystemTime, CaError> {
    let der = pem_der(pem).map_err(CaError::BadTrust)?;
    crate::cert_facts(&der)
        .map(|facts| facts.not_after)
        .ok_or_else(|| CaError::BadTrust("not an X.509 certificate".to_string()))
}

/// A signed workload certificate, with the issuer certificate that chains it to the anchor.
#[derive(Clone, Debug)]
pub struct Certified {
    pub leaf_der: Vec<u8>,
    pub issuer_der: Vec<u8>,
    pub not_after: OffsetDateTime,
}

/// Signs workload certificates.
pub struct Issuer {
    issuer: RcgenIssuer<'static, KeyPair>,
    issuer_der: Vec<u8>,
}

impl Issuer {
    /// The issuer of these PEM files.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Issuer, CaError> {
        let key =
            KeyPair::from_pem(key_pem).map_err(|e| CaError::BadIssuer(format!("the key: {e}")))?;
        let issuer = RcgenIssuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|e| CaError::BadIssuer(format!("the certificate: {e}")))?;
        let der = pem_der(cert_pem).map_err(CaError::BadIssuer)?;
        Ok(Issuer {
            issuer,
            issuer_der: der,
        })
    }

    /// Signs `csr_der` for `identity`, valid for `lifetime`, after checking that the CSR
    /// is well formed, correctly signed, for an ECDSA P-256 key, and names exactly that
    /// identity and nothing else.
    pub fn certify(
        &self,
        csr_der: &[u8],
        identity: &str,
        lifetime: Duration,
    ) -> Result<Certified, CaError> {
        if parse_identity(identity).is_none() {
            return Err(CaError::NotAnIdentity(identity.to_string()));
        }
        let csr = CertificateSigningRequestParams::from_der(&csr_der.to_vec().into())
            .map_err(|_| CaError::MalformedCsr)?;
        if csr.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(CaError::WrongKeyType);
        }
        let names: Vec<String> = csr
            .params
            .subject_alt_names
            .iter()
            .map(|s| match s {
                SanType::DnsName(n) => n.as_str().to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        if names != [identity] {
            return Err(CaError::NameMismatch {
                expected: identity.to_string(),
                found: names,
            });
        }
        let mut leaf = CertificateParams::default();
        leaf.distinguished_name = crate::identity_subject(identity);
        leaf.subject_alt_names = csr.params.subject_alt_names.clone();
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        leaf.use_authority_key_identifier_extension = true;
        leaf.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        let now = OffsetDateTime::now_utc();
        // A little slack for clocks that disagree.
        leaf.not_before = now - time::Duration::minutes(1);
        leaf.not_after = now + lifetime;
        let cert = leaf.signed_by(&csr.public_key, &self.issuer)?;
        Ok(Certified {
            leaf_der: cert.der().to_vec(),
            issuer_der: self.issuer_der.clone(),
            not_after: leaf.not_after,
        })
    }
}

/// The DER contents of the first PEM block of `text`.
pub fn pem_der(text: &str) -> Result<Vec<u8>, String> {
    pem::parse(text)
        .map(|p| p.contents().to_vec())
        .map_err(|e| format!("not PEM: {e}"))
}

fn random_serial() -> Result<[u8; 16], CaError> {
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
        .map_err(|_| CaError::BadIssuer("no randomness for a serial number".into()))?;
    serial[0] &= 0x7f; // positive
    Ok(serial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{identity_name, request::LocalKey};

    #[test]
    fn users_trust_files_are_checked_part_by_part() {
        let hour = Duration::from_secs(3600);
        let ours = generate(hour, hour).unwrap();
        ours.check().unwrap();
        let theirs = generate(hour, hour).unwrap();
        let mixed = |f: &dyn Fn(&mut TrustFiles)| {
            let mut t = ours.clone();
            f(&mut t);
            t.check().unwrap_err().to_string()
        };
        assert!(mixed(&|t| t.anchor_pem = theirs.anchor_pem.clone())
            .contains("not signed by any of the trust anchors"));
        assert!(mixed(&|t| t.issuer_key_pem = theirs.issuer_key_pem.clone())
            .contains("does not belong to the issuer certificate"));
        // The anchor offered as the issuer: it chains, but the key is not its key.
        assert!(mixed(&|t| t.issuer_cert_pem = t.anchor_pem.clone())
            .contains("does not belong to the issuer certificate"));
        assert!(mixed(&|t| t.anchor_pem = "nothing here".into()).contains("trust anchors"));
        assert!(mixed(&|t| t.issuer_key_pem =
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into())
        .contains("issuer key"));
        // Both anchors trusted: the issuer of either fits.
        let both = TrustFiles {
            anchor_pem: format!("{}{}", theirs.anchor_pem, ours.anchor_pem),
            ..ours.clone()
        };
        both.check().unwrap();
        // An issuer past its end.
        let short = generate(hour, Duration::from_secs(1)).unwrap();
        std::thread::sleep(Duration::from_millis(2100));
        assert!(short
            .check()
            .unwrap_err()
            .to_string()
            .contains("not valid now"));
    }

    fn issuer() -> (TrustFiles, Issuer) {
        let files = generate(
            Duration::from_secs(3600 * 24 * 365),
            Duration::from_secs(3600 * 24 * 30),
        )
        .unwrap();
        let issuer = Issuer::from_pem(&files.issuer_cert_pem, &files.issuer_key_pem).unwrap();
        (files, issuer)
    }

    #[test]
    fn signs_a_proxys_request_for_its_own_name() {
        let (files, issuer) = issuer();
        let name = identity_name("web", "emojivoto");
        let key = LocalKey::generate(&name).unwrap();
        let certified = issuer
            .certify(&key.csr_der().unwrap(), &name, Duration::from_secs(3600))
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&certified.leaf_der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            format!("{:?}", san.value.general_names),
            format!("[DNSName(\"{name}\")]")
        );
        assert!(!cert.is_ca());
        let (_, issuer_cert) = x509_parser::parse_x509_certificate(&certified.issuer_der).unwrap();
        cert.verify_signature(Some(issuer_cert.public_key()))
            .unwrap();
        // The issuer chains to the anchor.
        let anchor_der = pem_der(&files.anchor_pem).unwrap();
        let (_, anchor) = x509_parser::parse_x509_certificate(&anchor_der).unwrap();
        issuer_cert
            .verify_signature(Some(anchor.public_key()))
            .unwrap();
        let lifetime = certified.not_after - OffsetDateTime::now_utc();
        assert!(lifetime <= time::Duration::hours(1) && lifetime > time::Duration::minutes(59));
    }

    #[test]
    fn an_identity_too_long_for_a_common_name_is_the_critical_san_alone() {
        let (_, issuer) = issuer();
        let long = identity_name("payments-reconciliation-worker", "finance-production");
        let short = identity_name("web", "emojivoto");
        for (name, has_cn) in [(&long, false), (&short, true)] {
            let key = LocalKey::generate(name).unwrap();
            let certified = issuer
                .certify(&key.csr_der().unwrap(), name, Duration::from_secs(3600))
                .unwrap();
            let (_, cert) = x509_parser::parse_x509_certificate(&certified.leaf_der).unwrap();
            let cn = cert.subject().iter_common_name().next().map(|c| c.as_str());
            assert_eq!(cn.is_some(), has_cn, "{name}: {cn:?}");
            let san = cert.subject_alternative_name().unwrap().unwrap();
            assert_eq!(san.critical, !has_cn, "{name}");
            assert_eq!(
                crate::cert_identity(&certified.leaf_der).as_deref(),
                Some(name.as_str())
            );
        }
    }

    #[test]
    fn refuses_requests_for_another_name_or_malformed_ones() {
        let (_, issuer) = issuer();
        let mine = identity_name("web", "emojivoto");
        let key = LocalKey::generate(&mine).unwrap();
        let csr = key.csr_der().unwrap();
        let other = identity_name("voting", "emojivoto");
        let err = issuer
            .certify(&csr, &other, Duration::from_secs(60))
            .unwrap_err();
        assert!(matches!(err, CaError::NameMismatch { .. }), "{err}");
        assert!(err.to_string().contains("voting.emojivoto"), "{err}");
        let mut broken = csr.clone();
        let last = broken.len() - 1;
        broken[last] ^= 0xff;
        assert!(matches!(
            issuer.certify(&broken, &mine, Duration::from_secs(60)),
            Err(CaError::MalformedCsr)
        ));
        assert!(matches!(
            issuer.certify(b"not a csr", &mine, Duration::from_secs(60)),
            Err(CaError::MalformedCsr)
        ));
        assert!(matches!(
            issuer.certify(&csr, "web.emojivoto.example.com", Duration::from_secs(60)),
            Err(CaError::NotAnIdentity(_))
        ));
    }
}

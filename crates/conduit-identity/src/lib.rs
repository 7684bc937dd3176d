//! Workload identity, shared by the controller (which issues), the proxy (which asks) and
//! the local runtime (which vouches for its pods). Identities are DNS-like names,
//! `<serviceaccount>.<namespace>.serviceaccount.identity.conduit.cluster.local`, carried
//! as the only SAN of short-lived ECDSA P-256 certificates signed by an issuer that a
//! trust anchor signed. Knows nothing about the network.

pub mod anchors;
pub mod ca;
pub mod request;
pub mod token;

/// The suffix every identity name ends with.
pub const IDENTITY_SUFFIX: &str = "serviceaccount.identity.conduit.cluster.local";

/// The identity of ServiceAccount `sa` in `namespace`.
pub fn identity_name(sa: &str, namespace: &str) -> String {
    format!("{sa}.{namespace}.{IDENTITY_SUFFIX}")
}

/// The identity of the controller of the control plane in `namespace` (it runs as the
/// ServiceAccount named after it): the only client a proxy's tap server lets in.
pub fn controller_identity(namespace: &str) -> String {
    identity_name(conduit_api::control_plane::CONTROLLER, namespace)
}

/// The ServiceAccount and namespace an identity name stands for.
pub fn parse_identity(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_suffix(IDENTITY_SUFFIX)?.strip_suffix('.')?;
    let (sa, ns) = rest.split_once('.')?;
    (!sa.is_empty() && !ns.is_empty() && !ns.contains('.')).then_some((sa, ns))
}

/// RFC 5280's upper bound on a common name, in characters.
const MAX_COMMON_NAME: usize = 64;

/// The subject of a workload's CSR and certificate: the identity as its common name when
/// it fits RFC 5280's bound, else empty (the SAN, which is what TLS checks, then becomes
/// critical). Long ServiceAccount and namespace names make longer identities.
pub fn identity_subject(identity: &str) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    if identity.chars().count() <= MAX_COMMON_NAME {
        dn.push(rcgen::DnType::CommonName, identity);
    }
    dn
}

/// What a certificate (DER) says of its holder, read in one parse. The certificate's
/// chain is not checked here; TLS does that.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFacts {
    /// Its one DNS SAN, when that is an identity name.
    pub identity: Option<String>,
    /// When it stops being valid.
    pub not_after: std::time::SystemTime,
}

/// What the certificate `der` says; `None` if it is not a certificate.
pub fn cert_facts(der: &[u8]) -> Option<CertFacts> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let identity = match cert.subject_alternative_name() {
        Ok(Some(san)) => match san.value.general_names.as_slice() {
            [x509_parser::extensions::GeneralName::DNSName(name)] => {
                parse_identity(name).map(|_| name.to_string())
            }
            _ => None,
        },
        _ => None,
    };
    let secs = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    Some(CertFacts {
        identity,
        not_after: std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
    })
}

/// The identity a certificate (DER) was issued to ([`CertFacts::identity`]).
pub fn cert_identity(der: &[u8]) -> Option<String> {
    cert_facts(der)?.identity
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_name_their_identity() {
        let files = ca::generate(
            std::time::Duration::from_secs(60),
            std::time::Duration::from_secs(60),
        )
        .unwrap();
        let issuer = ca::Issuer::from_pem(&files.issuer_cert_pem, &files.issuer_key_pem).unwrap();
        let name = identity_name("web", "emojivoto");
        let key = request::LocalKey::generate(&name).unwrap();
        let c = issuer
            .certify(
                &key.csr_der().unwrap(),
                &name,
                std::time::Duration::from_secs(60),
            )
            .unwrap();
        assert_eq!(cert_identity(&c.leaf_der), Some(name));
        // The issuer's certificate names no workload.
        assert_eq!(cert_identity(&c.issuer_der), None);
        assert_eq!(cert_identity(b"not a certificate"), None);
    }

    #[test]
    fn names_round_trip() {
        let n = identity_name("web", "emojivoto");
        assert_eq!(
            n,
            "web.emojivoto.serviceaccount.identity.conduit.cluster.local"
        );
        assert_eq!(parse_identity(&n), Some(("web", "emojivoto")));
        assert_eq!(
            parse_identity("web.serviceaccount.identity.conduit.cluster.local"),
            None
        );
        assert_eq!(
            parse_identity("a.b.c.serviceaccount.identity.conduit.cluster.local"),
            None
        );
        assert_eq!(parse_identity("web.emojivoto.example.com"), None);
    }
}

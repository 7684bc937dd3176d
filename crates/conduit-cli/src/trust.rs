//! `--identity-*-file`: the user's own trust anchor and issuer, for `conduit install` and
//! `conduit local up` alike, read and checked before anything starts.

use anyhow::Context as _;
use clap::Args;
use conduit_identity::ca::TrustFiles;
use std::path::{Path, PathBuf};

/// The three files, given all together or not at all.
#[derive(Args)]
pub struct IdentityFiles {
    /// The mesh's trust anchors (PEM), instead of generating a new anchor; needs the
    /// issuer's certificate and key too.
    #[arg(long, requires_all = ["identity_issuer_certificate_file", "identity_issuer_key_file"])]
    identity_trust_anchors_file: Option<PathBuf>,
    /// The issuer's certificate (PEM): a CA signed by one of the trust anchors.
    #[arg(long, requires = "identity_trust_anchors_file")]
    identity_issuer_certificate_file: Option<PathBuf>,
    /// The issuer's ECDSA P-256 private key (PEM).
    #[arg(long, requires = "identity_trust_anchors_file")]
    identity_issuer_key_file: Option<PathBuf>,
}

impl IdentityFiles {
    /// The files' contents, checked; `None` when none was given.
    pub fn load(&self) -> anyhow::Result<Option<TrustFiles>> {
        let (Some(anchors), Some(cert), Some(key)) = (
            &self.identity_trust_anchors_file,
            &self.identity_issuer_certificate_file,
            &self.identity_issuer_key_file,
        ) else {
            return Ok(None);
        };
        let read = |p: &Path, flag: &str| {
            std::fs::read_to_string(p).with_context(|| format!("reading {flag} {}", p.display()))
        };
        let files = TrustFiles {
            anchor_pem: read(anchors, "--identity-trust-anchors-file")?,
            issuer_cert_pem: read(cert, "--identity-issuer-certificate-file")?,
            issuer_key_pem: read(key, "--identity-issuer-key-file")?,
        };
        files.check().with_context(|| {
            format!(
                "the identity files ({}, {}, {}) cannot be used",
                anchors.display(),
                cert.display(),
                key.display()
            )
        })?;
        Ok(Some(files))
    }
}

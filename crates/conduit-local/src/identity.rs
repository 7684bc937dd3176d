//! The runtime's identity material: a trust anchor and an issuer (the user's, when `up`
//! was given them, else made at start; the anchor's key is never kept), the files the
//! control plane reads them from, and the secret that signs the tokens the runtime gives
//! its pods' proxies. Knows nothing of pods' lifecycles or of how the control plane runs.

use crate::{layout::Layout, spec::ContainerSpec, state::PodState};
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

/// The trust anchor's file name in the identity directory.
const ANCHOR_FILE: &str = "anchor.pem";

/// The running runtime's trust anchor, in `layout`'s run directory (`up` compares a
/// user's anchor with it).
pub fn anchor_file(layout: &Layout) -> PathBuf {
    identity_dir(layout).join(ANCHOR_FILE)
}

fn identity_dir(layout: &Layout) -> PathBuf {
    layout.dir().join("identity")
}

/// The runtime's identity material, in its run directory.
pub struct LocalIdentity {
    dir: PathBuf,
    /// The trust anchor, for proxies' `conduit-identity-trust-roots` ConfigMap reference.
    anchor_pem: String,
    tokens: conduit_identity::token::Tokens,
    lifetime: String,
}

impl LocalIdentity {
    /// Makes the trust files under the run directory; `CONDUIT_LOCAL_IDENTITY_LIFETIME`
    /// (default `24h`) sets how long certificates live.
    pub fn create(layout: &Layout) -> anyhow::Result<LocalIdentity> {
        let dir = identity_dir(layout);
        std::fs::create_dir_all(dir.join("tokens"))?;
        // Proxies (their own UID) must reach their token files, but not list them.
        for d in [&dir, &dir.join("tokens")] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))?;
        }
        // The user's own anchor and issuer when `up` was given them, else new ones.
        let files = match read_user_trust(&layout.user_trust())? {
            Some(files) => files,
            None => conduit_identity::ca::generate(
                Duration::from_secs(10 * 365 * 86_400),
                Duration::from_secs(365 * 86_400),
            )?,
        };
        std::fs::write(dir.join(ANCHOR_FILE), &files.anchor_pem)?;
        std::fs::write(dir.join("issuer.pem"), &files.issuer_cert_pem)?;
        let secret = conduit_identity::token::Tokens::generate_secret()
            .map_err(|_| anyhow::anyhow!("no randomness for the token secret"))?;
        for (name, bytes) in [
            ("issuer-key.pem", files.issuer_key_pem.as_bytes()),
            ("token-secret", &secret[..]),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, bytes)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        let lifetime =
            std::env::var("CONDUIT_LOCAL_IDENTITY_LIFETIME").unwrap_or_else(|_| "24h".into());
        Ok(LocalIdentity {
            anchor_pem: files.anchor_pem.clone(),
            dir,
            tokens: conduit_identity::token::Tokens::new(&secret),
            lifetime,
        })
    }

    /// The trust anchor (PEM), what the mesh's trust-roots ConfigMap would hold.
    pub fn anchor_pem(&self) -> &str {
        &self.anchor_pem
    }

    /// The file of the trust anchor.
    pub fn anchor_file(&self) -> PathBuf {
        self.dir.join(ANCHOR_FILE)
    }

    /// The file of the issuer's certificate.
    pub fn issuer_cert_file(&self) -> PathBuf {
        self.dir.join("issuer.pem")
    }

    /// The file of the issuer's private key (readable by root only).
    pub fn issuer_key_file(&self) -> PathBuf {
        self.dir.join("issuer-key.pem")
    }

    /// The file of the secret that signs pods' tokens (readable by root only).
    pub fn token_secret_file(&self) -> PathBuf {
        self.dir.join("token-secret")
    }

    /// How long certificates live, as the control plane's flag takes it (`24h`).
    pub fn lifetime(&self) -> &str {
        &self.lifetime
    }

    /// Writes the token of `pod` where only its proxy's UID can read it.
    pub fn token_for(
        &self,
        pod: &PodState,
        containers: &[ContainerSpec],
    ) -> std::io::Result<PathBuf> {
        let token = self.tokens.issue(&conduit_identity::token::Claims {
            namespace: pod.namespace.clone(),
            service_account: pod.service_account.clone(),
            pod: pod.name.clone(),
            ip: std::net::IpAddr::V4(pod.ip),
        });
        let path = self.dir.join("tokens").join(&pod.netns);
        std::fs::write(&path, token)?;
        let uid = containers
            .iter()
            .find(|c| c.name == conduit_api::names::PROXY_CONTAINER)
            .and_then(|c| c.run_as_user)
            .unwrap_or(conduit_api::uid::PROXY);
        std::os::unix::fs::chown(&path, Some(uid), Some(uid))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400))?;
        Ok(path)
    }
}

/// The files of the user's trust anchor and issuer, under `dir`.
const USER_TRUST_FILES: [&str; 3] = ["anchors.pem", "issuer.pem", "issuer-key.pem"];

/// Leaves the user's trust anchor and issuer for the next supervisor, or (with `None`)
/// makes sure it generates its own.
pub fn write_user_trust(
    dir: &Path,
    files: Option<&conduit_identity::ca::TrustFiles>,
) -> std::io::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    let Some(f) = files else { return Ok(()) };
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for (name, text) in
        USER_TRUST_FILES
            .iter()
            .zip([&f.anchor_pem, &f.issuer_cert_pem, &f.issuer_key_pem])
    {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

fn read_user_trust(dir: &Path) -> std::io::Result<Option<conduit_identity::ca::TrustFiles>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let [anchor_pem, issuer_cert_pem, issuer_key_pem] =
        USER_TRUST_FILES.map(|name| std::fs::read_to_string(dir.join(name)));
    Ok(Some(conduit_identity::ca::TrustFiles {
        anchor_pem: anchor_pem?,
        issuer_cert_pem: issuer_cert_pem?,
        issuer_key_pem: issuer_key_pem?,
    }))
}

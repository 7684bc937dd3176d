//! The Identity API: checks a proxy's token, checks that the identity it asks for is the
//! one the token proves, and signs its CSR with the issuer for a short lifetime. Every
//! refusal says why and is counted by reason. Locally the token is the runtime's (bound
//! to the pod's address, checked against the caller's); a Kubernetes TokenReview check
//! implements the same [`Authenticator`] trait.

use conduit_api::identity::{
    identity_server::{Identity, IdentityServer},
    CertifyRequest, CertifyResponse,
};
use conduit_identity::{ca::Issuer, identity_name, token::Tokens};
use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use tonic::{Request, Response, Status};

/// Proves who a caller is.
pub trait Authenticator: Send + Sync + 'static {
    /// The identity name `token`, presented from `caller`, proves; or why it proves nothing.
    fn authenticate(&self, token: &str, caller: Option<IpAddr>) -> Result<String, String>;
}

/// The local runtime's tokens.
pub struct LocalTokens(pub Tokens);

impl Authenticator for LocalTokens {
    fn authenticate(&self, token: &str, caller: Option<IpAddr>) -> Result<String, String> {
        let caller = caller.ok_or("the caller's address is unknown")?;
        let claims = self.0.verify(token, caller).map_err(|e| e.to_string())?;
        Ok(identity_name(&claims.service_account, &claims.namespace))
    }
}

/// Certificates issued and refused, by outcome.
#[derive(Default)]
pub struct Counts(Mutex<BTreeMap<&'static str, u64>>);

impl Counts {
    fn add(&self, outcome: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(outcome)
            .or_default() += 1;
    }

    /// Every outcome and how often it happened.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The Identity API.
pub struct IdentityService {
    issuer: Issuer,
    auth: Box<dyn Authenticator>,
    lifetime: Duration,
    counts: Arc<Counts>,
}

impl IdentityService {
    /// A tonic service issuing certificates valid for `lifetime`.
    pub fn server(
        issuer: Issuer,
        auth: Box<dyn Authenticator>,
        lifetime: Duration,
        counts: Arc<Counts>,
    ) -> IdentityServer<IdentityService> {
        IdentityServer::new(IdentityService {
            issuer,
            auth,
            lifetime,
            counts,
        })
    }

    fn refuse(&self, reason: &'static str, status: Status) -> Status {
        self.counts.add(reason);
        tracing::info!(reason, message = status.message(), "certificate refused");
        status
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        req: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let caller = req.remote_addr().map(|a| a.ip());
        let r = req.into_inner();
        let proven = self.auth.authenticate(&r.token, caller).map_err(|why| {
            self.refuse(
                "bad_token",
                Status::unauthenticated(format!("the token proves nothing: {why}")),
            )
        })?;
        if proven != r.identity {
            return Err(self.refuse(
                "identity_mismatch",
                Status::permission_denied(format!("the token proves {proven}, not {}", r.identity)),
            ));
        }
        let certified = self
            .issuer
            .certify(&r.certificate_signing_request, &r.identity, self.lifetime)
            .map_err(|e| self.refuse("bad_csr", Status::invalid_argument(e.to_string())))?;
        self.counts.add("issued");
        tracing::info!(identity = %r.identity, "certificate issued");
        Ok(Response::new(CertifyResponse {
            leaf_certificate: certified.leaf_der,
            intermediate_certificates: vec![certified.issuer_der],
            valid_until_unix: certified.not_after.unix_timestamp(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conduit_api::identity::identity_client::IdentityClient;
    use conduit_identity::{ca, request::LocalKey, token::Claims};

    async fn serve(tokens: Tokens) -> (String, Arc<Counts>) {
        let files = ca::generate(Duration::from_secs(3600), Duration::from_secs(3600)).unwrap();
        let issuer = Issuer::from_pem(&files.issuer_cert_pem, &files.issuer_key_pem).unwrap();
        let counts = Arc::new(Counts::default());
        let svc = IdentityService::server(
            issuer,
            Box::new(LocalTokens(tokens)),
            Duration::from_secs(60),
            counts.clone(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (addr, counts)
    }

    fn claims(sa: &str, ip: &str) -> Claims {
        Claims {
            namespace: "emojivoto".into(),
            service_account: sa.into(),
            pod: format!("{sa}-1"),
            ip: ip.parse().unwrap(),
        }
    }

    #[tokio::test]
    async fn certifies_a_proven_identity_and_refuses_everything_else_with_a_reason() {
        let secret = Tokens::generate_secret().unwrap();
        let (addr, counts) = serve(Tokens::new(&secret)).await;
        let mut client = IdentityClient::connect(addr).await.unwrap();
        let tokens = Tokens::new(&secret);
        let web = identity_name("web", "emojivoto");
        let key = LocalKey::generate(&web).unwrap();
        let ask = |identity: &str, token: String, csr: Vec<u8>| CertifyRequest {
            identity: identity.to_string(),
            token,
            certificate_signing_request: csr,
        };

        let ok = client
            .certify(ask(
                &web,
                tokens.issue(&claims("web", "127.0.0.1")),
                key.csr_der().unwrap(),
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(!ok.leaf_certificate.is_empty() && ok.intermediate_certificates.len() == 1);
        assert!(ok.valid_until_unix > 0);

        // Another pod's token, used from this address.
        let stolen = client
            .certify(ask(
                &web,
                tokens.issue(&claims("web", "198.18.0.4")),
                key.csr_der().unwrap(),
            ))
            .await
            .unwrap_err();
        assert_eq!(stolen.code(), tonic::Code::Unauthenticated);
        assert!(
            stolen
                .message()
                .contains("belongs to the pod at 198.18.0.4"),
            "{}",
            stolen.message()
        );
        // A forged token.
        let forged = Tokens::new(b"not the runtime's secret").issue(&claims("web", "127.0.0.1"));
        let err = client
            .certify(ask(&web, forged, key.csr_der().unwrap()))
            .await
            .unwrap_err();
        assert!(
            err.message().contains("signature is wrong"),
            "{}",
            err.message()
        );
        // A token for one ServiceAccount asking for another's identity.
        let voting = identity_name("voting", "emojivoto");
        let err = client
            .certify(ask(
                &voting,
                tokens.issue(&claims("web", "127.0.0.1")),
                key.csr_der().unwrap(),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        // A CSR for another name than the one asked for, and a malformed one.
        let other_key = LocalKey::generate(&voting).unwrap();
        let err = client
            .certify(ask(
                &web,
                tokens.issue(&claims("web", "127.0.0.1")),
                other_key.csr_der().unwrap(),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().contains("must name exactly one DNS identity"),
            "{}",
            err.message()
        );
        let err = client
            .certify(ask(
                &web,
                tokens.issue(&claims("web", "127.0.0.1")),
                b"junk".to_vec(),
            ))
            .await
            .unwrap_err();
        assert!(err.message().contains("malformed"), "{}", err.message());

        let c = counts.snapshot();
        assert_eq!(
            (
                c["issued"],
                c["bad_token"],
                c["identity_mismatch"],
                c["bad_csr"]
            ),
            (1, 2, 1, 2)
        );
    }
}

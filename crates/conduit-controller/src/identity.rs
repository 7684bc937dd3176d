//! The Identity API: checks a proxy's token, checks that the identity it asks for is the
//! one the token proves, and signs its CSR with the issuer for a short lifetime. Every
//! refusal says why and is counted by reason. Locally the token is the runtime's (bound
//! to the pod's address, checked against the caller's); on Kubernetes it is a projected
//! ServiceAccount token with the mesh's audience, checked with a TokenReview
//! ([`TokenReviews`]), whose pod claims must name the pod at the caller's address: a
//! token copied out of a pod proves nothing from anywhere else.

use crate::discovery::Workloads;
use crate::grpc::Access;
use conduit_api::identity::{
    identity_server::{Identity, IdentityServer},
    CertifyRequest, CertifyResponse,
};
use conduit_api::names;
use conduit_identity::{ca::Issuer, identity_name, token::Tokens};
use parking_lot::Mutex;
use std::{collections::BTreeMap, net::IpAddr, sync::Arc, time::Duration};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// Why a token proved nothing.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token is no good.
    #[error("{0}")]
    Refused(String),
    /// It could not be checked now (the Kubernetes API did not answer); try again.
    #[error("{0}")]
    Unavailable(String),
}

/// Proves who a caller is.
#[tonic::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The identity name `token`, presented from `caller`, proves.
    async fn authenticate(&self, token: &str, caller: Option<IpAddr>) -> Result<String, AuthError>;
}

/// The local runtime's tokens.
pub struct LocalTokens(pub Tokens);

#[tonic::async_trait]
impl Authenticator for LocalTokens {
    async fn authenticate(&self, token: &str, caller: Option<IpAddr>) -> Result<String, AuthError> {
        let caller =
            caller.ok_or_else(|| AuthError::Refused("the caller's address is unknown".into()))?;
        let claims = self
            .0
            .verify(token, caller)
            .map_err(|e| AuthError::Refused(e.to_string()))?;
        Ok(identity_name(&claims.service_account, &claims.namespace))
    }
}

/// Kubernetes: a projected ServiceAccount token, checked by the API server's TokenReview
/// for the mesh's audience; the ServiceAccount it names is the identity, and the pod it
/// was bound to must be the one at the caller's address.
pub struct TokenReviews {
    pub client: kube::Client,
    /// The audience tokens must be for (`identity.conduit.io`).
    pub audience: String,
    /// Discovery's pods, to find the address of the pod a token names.
    pub workloads: watch::Receiver<Arc<Workloads>>,
}

impl TokenReviews {
    /// Refuses a token of pod `namespace/pod` presented from anywhere but that pod's
    /// address. (Discovery keeps no pod UIDs: the address is what tells pods apart.)
    fn check_pod(
        &self,
        namespace: &str,
        pod: &str,
        caller: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        let caller =
            caller.ok_or_else(|| AuthError::Refused("the caller's address is unknown".into()))?;
        let known = self.workloads.borrow().pod(namespace, pod).cloned();
        let Some(known) = known else {
            return Err(AuthError::Unavailable(format!(
                "it was issued for pod {namespace}/{pod}, which discovery does not know (yet)"
            )));
        };
        if known.ip != caller {
            return Err(AuthError::Refused(format!(
                "it belongs to pod {namespace}/{pod} at {}, not to the caller at {caller}",
                known.ip
            )));
        }
        Ok(())
    }
}

/// The API server's TokenReview of `token`, for `audiences` (`None`: the API server's
/// own): what it says of the token. Proxies' tokens and the public API's callers' alike.
pub async fn review_token(
    client: &kube::Client,
    token: &str,
    audiences: Option<Vec<String>>,
) -> Result<k8s_openapi::api::authentication::v1::TokenReviewStatus, kube::Error> {
    use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            audiences,
        },
        ..Default::default()
    };
    let reviewed = kube::Api::<TokenReview>::all(client.clone())
        .create(&kube::api::PostParams::default(), &review)
        .await?;
    Ok(reviewed.status.unwrap_or_default())
}

#[tonic::async_trait]
impl Authenticator for TokenReviews {
    async fn authenticate(&self, token: &str, caller: Option<IpAddr>) -> Result<String, AuthError> {
        let status = review_token(&self.client, token, Some(vec![self.audience.clone()]))
            .await
            .map_err(|e| {
                AuthError::Unavailable(format!(
                    "the Kubernetes API could not review the token: {e}"
                ))
            })?;
        if status.authenticated != Some(true) {
            let why = status.error.unwrap_or_else(|| "not authenticated".into());
            return Err(AuthError::Refused(format!(
                "the Kubernetes API refused it: {why}"
            )));
        }
        if !status
            .audiences
            .unwrap_or_default()
            .contains(&self.audience)
        {
            return Err(AuthError::Refused(format!(
                "it is not a token for the audience {}",
                self.audience
            )));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let (namespace, service_account) = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|r| r.split_once(':'))
            .ok_or_else(|| {
                AuthError::Refused(format!(
                    "it belongs to {username:?}, not to a ServiceAccount"
                ))
            })?;
        let extra = user.extra.unwrap_or_default();
        let claim = |key: &str| extra.get(key).and_then(|v| v.first()).map(String::as_str);
        let pod = claim(names::TOKEN_POD_NAME_EXTRA).ok_or_else(|| {
            AuthError::Refused(format!(
                "it is not bound to a pod (the review has no {}): give proxies a projected ServiceAccount token",
                names::TOKEN_POD_NAME_EXTRA
            ))
        })?;
        self.check_pod(namespace, pod, caller)?;
        Ok(identity_name(service_account, namespace))
    }
}

/// Certificates issued and refused, by outcome.
#[derive(Default)]
pub struct Counts(Mutex<BTreeMap<&'static str, u64>>);

impl Counts {
    fn add(&self, outcome: &'static str) {
        *self.0.lock().entry(outcome).or_default() += 1;
    }

    /// Every outcome and how often it happened.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().clone()
    }
}

/// The Identity API.
pub struct IdentityService {
    issuer: Issuer,
    auth: Box<dyn Authenticator>,
    lifetime: Duration,
    counts: Arc<Counts>,
    access: Access,
}

impl IdentityService {
    /// A tonic service issuing certificates valid for `lifetime`.
    pub fn server(
        issuer: Issuer,
        auth: Box<dyn Authenticator>,
        lifetime: Duration,
        counts: Arc<Counts>,
        access: Access,
    ) -> IdentityServer<IdentityService> {
        IdentityServer::new(IdentityService {
            issuer,
            auth,
            lifetime,
            counts,
            access,
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
        let (caller, _admitted) = self.access.call(&req)?;
        let caller = Some(caller.addr.ip());
        let r = req.into_inner();
        let proven = self
            .auth
            .authenticate(&r.token, caller)
            .await
            .map_err(|e| match e {
                AuthError::Refused(why) => self.refuse(
                    "bad_token",
                    Status::unauthenticated(format!("the token proves nothing: {why}")),
                ),
                AuthError::Unavailable(why) => self.refuse(
                    "authenticator_unavailable",
                    Status::unavailable(format!("the token cannot be checked now: {why}")),
                ),
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
            crate::grpc::tests::open(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(crate::grpc::incoming(listener, None).unwrap()),
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

    /// TokenReviews against the in-memory API server (over real HTTP, answering as
    /// kube-apiserver does, pod claims of bound tokens included; no cluster can run here).
    #[tokio::test]
    async fn token_reviews_prove_service_accounts_for_the_mesh_audience_from_their_pod_only() {
        let api = conduit_kube_fake::FakeApiServer::start().await.unwrap();
        api.add_pod_token(
            "web-token",
            "emojivoto",
            "web",
            "web-1",
            &["identity.conduit.io"],
        );
        api.add_pod_token(
            "api-token",
            "emojivoto",
            "web",
            "web-1",
            &["https://kubernetes.default.svc"],
        );
        api.add_token(
            "unbound-token",
            "emojivoto",
            "web",
            &["identity.conduit.io"],
        );
        api.add_pod_token(
            "ghost-token",
            "emojivoto",
            "web",
            "web-9",
            &["identity.conduit.io"],
        );
        let url = api.url().parse().unwrap();
        // Discovery knows web-1 at 198.18.0.4.
        let (_tx, workloads) = watch::channel(Arc::new(crate::discovery::tests::sample()));
        let reviews = TokenReviews {
            client: kube::Client::try_from(kube::Config::new(url)).unwrap(),
            audience: "identity.conduit.io".into(),
            workloads,
        };
        let web_ip: IpAddr = "198.18.0.4".parse().unwrap();
        let proven = reviews
            .authenticate("web-token", Some(web_ip))
            .await
            .unwrap();
        assert_eq!(proven, identity_name("web", "emojivoto"));
        assert!(
            api.requests()
                .contains(&"POST /apis/authentication.k8s.io/v1/tokenreviews?".to_string()),
            "{:?}",
            api.requests()
        );

        // The pod's token presented from another pod's address (voting-1's).
        match reviews
            .authenticate("web-token", "198.18.0.3".parse().ok())
            .await
        {
            Err(AuthError::Refused(why)) => assert!(
                why.contains(
                    "belongs to pod emojivoto/web-1 at 198.18.0.4, not to the caller at 198.18.0.3"
                ),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        // A token bound to no pod, and one bound to a pod discovery does not know.
        match reviews.authenticate("unbound-token", Some(web_ip)).await {
            Err(AuthError::Refused(why)) => assert!(
                why.contains("not bound to a pod") && why.contains(names::TOKEN_POD_NAME_EXTRA),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        match reviews.authenticate("ghost-token", Some(web_ip)).await {
            Err(AuthError::Unavailable(why)) => assert!(why.contains("emojivoto/web-9"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A token of the same ServiceAccount for the API server's audience is no good.
        match reviews.authenticate("api-token", Some(web_ip)).await {
            Err(AuthError::Refused(why)) => {
                assert!(why.contains("invalid for the target audiences"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        match reviews.authenticate("forged", Some(web_ip)).await {
            Err(AuthError::Refused(why)) => assert!(why.contains("invalid bearer token"), "{why}"),
            other => panic!("{other:?}"),
        }
        // The API down: not a refusal, the proxy should try again.
        api.set_unreachable(true);
        match reviews.authenticate("web-token", Some(web_ip)).await {
            Err(AuthError::Unavailable(why)) => assert!(why.contains("could not review"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}

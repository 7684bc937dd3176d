//! Local-runtime identity tokens: the runtime vouches for each pod with a token naming its
//! namespace, ServiceAccount, pod and address, signed (HMAC-SHA256) with a secret it shares
//! only with the controller. A token is good only from its pod's own address, so a pod that
//! learns another pod's token still cannot claim that identity with it. (On Kubernetes, a
//! projected ServiceAccount token checked by TokenReview plays this part.)

use ring::hmac;
use std::net::IpAddr;

/// What a token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub namespace: String,
    pub service_account: String,
    pub pod: String,
    pub ip: IpAddr,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is not one the local runtime issued (malformed)")]
    Malformed,
    #[error("the token's signature is wrong: it was forged or issued by another runtime")]
    BadSignature,
    #[error("the token belongs to the pod at {owner}, not to {caller}")]
    WrongAddress { owner: IpAddr, caller: IpAddr },
}

/// Issues and checks tokens with one secret.
pub struct Tokens {
    key: hmac::Key,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Tokens {
    /// Tokens signed with `secret` (at least 32 bytes).
    pub fn new(secret: &[u8]) -> Tokens {
        Tokens {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// A new random secret.
    pub fn generate_secret() -> Result<[u8; 32], ring::error::Unspecified> {
        let mut s = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut s)?;
        Ok(s)
    }

    /// The token of a pod.
    pub fn issue(&self, c: &Claims) -> String {
        let payload = format!(
            "v1|{}|{}|{}|{}",
            c.namespace, c.service_account, c.pod, c.ip
        );
        let tag = hmac::sign(&self.key, payload.as_bytes());
        format!("{}.{}", hex(payload.as_bytes()), hex(tag.as_ref()))
    }

    /// Checks a token presented by `caller`, returning what it says.
    pub fn verify(&self, token: &str, caller: IpAddr) -> Result<Claims, TokenError> {
        let (payload, tag) = token.trim().split_once('.').ok_or(TokenError::Malformed)?;
        let payload = unhex(payload).ok_or(TokenError::Malformed)?;
        let tag = unhex(tag).ok_or(TokenError::Malformed)?;
        hmac::verify(&self.key, &payload, &tag).map_err(|_| TokenError::BadSignature)?;
        let text = String::from_utf8(payload).map_err(|_| TokenError::Malformed)?;
        let parts: Vec<&str> = text.split('|').collect();
        let [version, namespace, sa, pod, ip] = parts.as_slice() else {
            return Err(TokenError::Malformed);
        };
        if *version != "v1" {
            return Err(TokenError::Malformed);
        }
        let ip: IpAddr = ip.parse().map_err(|_| TokenError::Malformed)?;
        if ip != caller {
            return Err(TokenError::WrongAddress { owner: ip, caller });
        }
        Ok(Claims {
            namespace: namespace.to_string(),
            service_account: sa.to_string(),
            pod: pod.to_string(),
            ip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            namespace: "emojivoto".into(),
            service_account: "web".into(),
            pod: "web-abc12".into(),
            ip: "198.18.0.4".parse().unwrap(),
        }
    }

    #[test]
    fn tokens_verify_only_from_their_pod_and_only_with_the_secret() {
        let tokens = Tokens::new(&Tokens::generate_secret().unwrap());
        let t = tokens.issue(&claims());
        assert_eq!(tokens.verify(&t, claims().ip), Ok(claims()));
        let thief = "198.18.0.9".parse().unwrap();
        assert_eq!(
            tokens.verify(&t, thief),
            Err(TokenError::WrongAddress {
                owner: claims().ip,
                caller: thief
            })
        );
        let other_runtime = Tokens::new(&Tokens::generate_secret().unwrap());
        assert_eq!(
            other_runtime.verify(&t, claims().ip),
            Err(TokenError::BadSignature)
        );
        // Changing a byte of the payload (another ServiceAccount, say) breaks the signature.
        let forged = Tokens::new(b"guess").issue(&Claims {
            service_account: "admin".into(),
            ..claims()
        });
        assert_eq!(
            tokens.verify(&forged, claims().ip),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            tokens.verify("nonsense", claims().ip),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            tokens.verify("zz.zz", claims().ip),
            Err(TokenError::Malformed)
        );
    }
}

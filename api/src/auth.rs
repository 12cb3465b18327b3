//! Who may do what: client tokens with roles, and the cluster secret between nodes.
//!
//! Tokens are configured as SHA-256 digests (never in clear) with a role:
//! `reader` (lists and cluster state), `reporter` (heartbeats), `admin` (everything,
//! administrative actions and membership included). A client sends its token as
//! `Authorization: Bearer TOKEN` or, as OpenStack clients do, `X-Auth-Token: TOKEN`. Nodes
//! authenticate to each other with the cluster secret in `x-registry-cluster-secret`: on
//! Raft RPCs, and on requests a node forwards to the leader after authorising them itself.
//! The secret is always required, whatever the client mode: with client tokens disabled
//! (a local demo), an outsider still cannot vote, append or install a snapshot.
//! Tokens and the secret are compared by digest in constant time and never logged.

use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use warp::http::HeaderMap;

use crate::audit::Actor;
use crate::error::ApiError;

/// Header carrying the cluster secret between nodes.
pub const SECRET_HEADER: &str = "x-registry-cluster-secret";

/// The shortest cluster secret accepted.
pub const MIN_SECRET_LEN: usize = 16;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Lists services and reads cluster state.
    Reader,
    /// Sends heartbeats.
    Reporter,
    /// Everything: administrative actions and membership changes too.
    Admin,
}

impl Role {
    /// Whether a holder of `self` may do what needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self == Role::Admin || self == needed
    }
}

type Digest32 = [u8; 32];

/// A client token a node accepts, as configured (`[[auth.tokens]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientToken {
    /// What it may do.
    pub role: Role,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// Who holds it: the name the audit trail records for the changes made with it
    /// (`modified_by`). `None`: `sha256:` and the digest's first 12 hex characters.
    #[serde(default)]
    pub name: Option<String>,
}

impl ClientToken {
    /// A token without a name.
    pub fn new(role: Role, sha256: impl Into<String>) -> Self {
        Self {
            role,
            sha256: sha256.into(),
            name: None,
        }
    }
}

/// A token as [`Auth`] checks it.
#[derive(Clone)]
struct Accepted {
    role: Role,
    digest: Digest32,
    /// Who its holder is, for the audit trail.
    actor: Actor,
}

/// The SHA-256 of a token or secret, hex-encoded: what a config stores.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn digest(value: &[u8]) -> Digest32 {
    Sha256::digest(value).into()
}

fn same(a: &Digest32, b: &Digest32) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A node's authentication settings.
#[derive(Clone)]
pub struct Auth {
    /// Accepted tokens by digest; `None` when client authentication is disabled.
    tokens: Option<Vec<Accepted>>,
    /// The cluster secret (sent to peers) and its digest (checked). Always set: requests
    /// between nodes need it whatever the client mode.
    secret: (Arc<str>, Digest32),
    /// Digests of other secrets also accepted from peers, never sent: the old or the next
    /// secret while it is rotated.
    also_accepted: Vec<Digest32>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.tokens.as_ref().map(Vec::len))
            .field("also_accepted", &self.also_accepted.len())
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Client tokens (`None`: client authentication disabled) and the cluster secret (at
    /// least [`MIN_SECRET_LEN`] characters).
    pub fn new(tokens: Option<Vec<ClientToken>>, secret: String) -> Result<Self, String> {
        Self::rotating(tokens, secret, Vec::new())
    }

    /// As [`Auth::new`], accepting from peers the secrets `also_accepted` too (each at
    /// least [`MIN_SECRET_LEN`] characters) while sending only `secret`: the state of a node
    /// while the cluster secret is rotated.
    pub fn rotating(
        tokens: Option<Vec<ClientToken>>,
        secret: String,
        also_accepted: Vec<String>,
    ) -> Result<Self, String> {
        let tokens = tokens
            .map(|list| {
                list.into_iter()
                    .map(|t| {
                        let hex_digest = t.sha256.trim();
                        let bytes = hex::decode(hex_digest)
                            .map_err(|e| format!("token digest is not hex: {e}"))?;
                        let digest: Digest32 = bytes.try_into().map_err(|_| {
                            "token digest must be a SHA-256 (64 hex characters)".to_string()
                        })?;
                        let actor = match &t.name {
                            Some(n) if n.trim().is_empty() => {
                                return Err("a token's name must not be empty".to_string())
                            }
                            Some(n) => Actor::token(n.trim()),
                            None => Actor::token(&format!(
                                "sha256:{}",
                                &hex_digest[..12].to_ascii_lowercase()
                            )),
                        };
                        Ok(Accepted {
                            role: t.role,
                            digest,
                            actor,
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .transpose()?;
        if std::iter::once(&secret)
            .chain(&also_accepted)
            .any(|s| s.len() < MIN_SECRET_LEN)
        {
            return Err(format!(
                "the cluster secret must be at least {MIN_SECRET_LEN} characters"
            ));
        }
        let d = digest(secret.as_bytes());
        Ok(Self {
            tokens,
            secret: (secret.into(), d),
            also_accepted: also_accepted.iter().map(|s| digest(s.as_bytes())).collect(),
        })
    }

    /// Whether client requests need a token.
    pub fn tokens_required(&self) -> bool {
        self.tokens.is_some()
    }

    /// The cluster secret to send to peers.
    pub fn secret(&self) -> &str {
        &self.secret.0
    }

    /// Other secrets accepted from peers.
    pub fn also_accepted(&self) -> usize {
        self.also_accepted.len()
    }

    /// Client tokens accepted (`None`: client authentication disabled).
    pub fn tokens(&self) -> Option<usize> {
        self.tokens.as_ref().map(Vec::len)
    }

    /// Whether the request carries an accepted cluster secret (a peer node). Every
    /// accepted digest is compared, so the time taken does not say which one matched.
    fn is_peer(&self, headers: &HeaderMap) -> bool {
        let Some(got) = headers.get(SECRET_HEADER) else {
            return false;
        };
        let got = digest(got.as_bytes());
        std::iter::once(&self.secret.1)
            .chain(&self.also_accepted)
            .fold(false, |found, want| same(want, &got) | found)
    }

    /// Checks a request between nodes: 401 unless it carries the cluster secret.
    pub fn check_peer(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.is_peer(headers) {
            return Ok(());
        }
        Err(ApiError::Unauthorized(
            "Raft RPC refused: missing or wrong cluster secret".into(),
        ))
    }

    /// Checks a client request that needs `role`: 401 without a valid token, 403 with a
    /// token whose role does not allow it; says who the request acts as. A peer forwarding
    /// a request it authorised itself (cluster secret) passes, acting as the actor it names
    /// ([`Actor::relayed`]). `certificate`: the subject of the client certificate the
    /// request came with, who it acts as when client tokens are disabled.
    pub fn check(
        &self,
        headers: &HeaderMap,
        role: Role,
        certificate: Option<&str>,
    ) -> Result<Actor, ApiError> {
        if self.is_peer(headers) {
            let node = headers
                .get(crate::transport::peer::FORWARDED_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("unknown");
            return Ok(Actor::relayed(headers, node));
        }
        let Some(tokens) = &self.tokens else {
            return Ok(certificate.map_or_else(Actor::anonymous, Actor::certificate));
        };
        let Some(token) = token_of(headers) else {
            return Err(ApiError::Unauthorized(
                "a token is required: send Authorization: Bearer TOKEN or X-Auth-Token".into(),
            ));
        };
        let d = digest(token.as_bytes());
        let Some(found) = tokens.iter().find(|t| same(&t.digest, &d)) else {
            return Err(ApiError::Unauthorized("unknown token".into()));
        };
        if found.role.allows(role) {
            Ok(found.actor.clone())
        } else {
            Err(ApiError::Forbidden(format!(
                "a {:?} token may not do this: it needs the {role:?} role",
                found.role
            )))
        }
    }
}

/// The token a request carries, if any.
fn token_of(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        if let Some(t) = v.strip_prefix("Bearer ") {
            return Some(t.trim());
        }
    }
    headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// A node's [`Auth`], replaced whole when its settings are reloaded (SIGHUP): every check
/// and every request to a peer reads the current one, so a reload takes effect at once,
/// without a restart.
#[derive(Debug, Clone)]
pub struct SharedAuth(Arc<RwLock<Arc<Auth>>>);

impl SharedAuth {
    /// Starts with `auth`.
    pub fn new(auth: Auth) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(auth))))
    }

    /// The settings in force now.
    pub fn current(&self) -> Arc<Auth> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `auth` in force.
    pub fn replace(&self, auth: Auth) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(auth);
    }

    /// The cluster secret to send to peers now.
    pub fn secret(&self) -> Arc<str> {
        Arc::clone(&self.current().secret.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    /// Each role may do exactly what it may; bad or missing tokens are 401, the wrong
    /// role 403; a peer with the cluster secret passes.
    #[test]
    fn roles_and_tokens() {
        let auth = Auth::new(
            Some(vec![
                ClientToken::new(Role::Reader, hash_token("r-token")),
                ClientToken::new(Role::Reporter, hash_token("p-token")),
                ClientToken {
                    name: Some("ops".into()),
                    ..ClientToken::new(Role::Admin, hash_token("a-token"))
                },
            ]),
            "a-cluster-secret-of-length".into(),
        )
        .expect("valid settings");
        let status = |h: &HeaderMap, role| {
            auth.check(h, role, None)
                .map(drop)
                .map_err(|e| e.status().as_u16())
        };
        let bearer = |t: &str| headers(&[("authorization", &format!("Bearer {t}"))]);
        for (token, allowed) in [
            ("r-token", [true, false, false]),
            ("p-token", [false, true, false]),
            ("a-token", [true, true, true]),
        ] {
            for (role, ok) in [Role::Reader, Role::Reporter, Role::Admin]
                .into_iter()
                .zip(allowed)
            {
                let want = if ok { Ok(()) } else { Err(403) };
                assert_eq!(status(&bearer(token), role), want, "{token} doing {role:?}");
            }
        }
        assert_eq!(
            status(&headers(&[("x-auth-token", "a-token")]), Role::Admin),
            Ok(())
        );
        assert_eq!(status(&HeaderMap::new(), Role::Reader), Err(401));
        assert_eq!(status(&bearer("nope"), Role::Reader), Err(401));
        let peer = headers(&[(SECRET_HEADER, "a-cluster-secret-of-length")]);
        assert_eq!(status(&peer, Role::Admin), Ok(()));
        assert!(auth.check_peer(&peer).is_ok());
        let wrong = headers(&[(SECRET_HEADER, "another-secret-of-length")]);
        assert_eq!(
            auth.check_peer(&wrong).map_err(|e| e.status().as_u16()),
            Err(401)
        );
        assert!(auth.check_peer(&HeaderMap::new()).is_err());
        let actor = |auth: &Auth, h: &HeaderMap, cert| {
            auth.check(h, Role::Admin, cert)
                .map(|a| a.to_string())
                .unwrap_or_default()
        };
        assert_eq!(actor(&auth, &bearer("a-token"), None), "token:ops");
        assert_eq!(
            actor(&auth, &bearer("a-token"), Some("CN=x")),
            "token:ops",
            "the token names who acts, not the certificate"
        );
        let reader = hash_token("r-token");
        assert_eq!(
            auth.check(&bearer("r-token"), Role::Reader, None)
                .map(|a| a.to_string())
                .ok(),
            Some(format!("token:sha256:{}", &reader[..12])),
            "an unnamed token is named by its digest"
        );
        let open = Auth::new(None, "a-cluster-secret-of-length".into()).expect("auth");
        assert_eq!(actor(&open, &HeaderMap::new(), None), "anonymous");
        assert_eq!(
            actor(&open, &HeaderMap::new(), Some("CN=ops")),
            "cert:CN=ops"
        );
        assert!(
            open.check_peer(&HeaderMap::new()).is_err(),
            "without client tokens, requests between nodes still need the secret"
        );
        assert!(open.check_peer(&peer).is_ok());
        assert!(Auth::new(None, "short".into()).is_err());
        let rotating = Auth::rotating(
            None,
            "the-next-cluster-secret".into(),
            vec!["a-cluster-secret-of-length".into()],
        )
        .expect("auth");
        assert!(
            rotating.check_peer(&peer).is_ok(),
            "the old secret is accepted"
        );
        let next = headers(&[(SECRET_HEADER, "the-next-cluster-secret")]);
        assert!(rotating.check_peer(&next).is_ok(), "and the new one");
        assert!(rotating.check_peer(&wrong).is_err(), "and no other");
        assert_eq!(
            rotating.secret(),
            "the-next-cluster-secret",
            "the new one is sent"
        );
        assert!(
            Auth::rotating(None, "the-next-cluster-secret".into(), vec!["short".into()]).is_err()
        );
        let long = "a-cluster-secret-of-length".to_string();
        assert!(Auth::new(
            Some(vec![ClientToken::new(Role::Admin, "xyz")]),
            long.clone()
        )
        .is_err());
        let unnamed = ClientToken {
            name: Some(" ".into()),
            ..ClientToken::new(Role::Admin, hash_token("t"))
        };
        assert!(Auth::new(Some(vec![unnamed]), long).is_err());
    }
}

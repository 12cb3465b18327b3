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
    tokens: Option<Vec<(Role, Digest32)>>,
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
    /// Client tokens given as `(role, hex SHA-256)` (`None`: client authentication
    /// disabled) and the cluster secret (at least [`MIN_SECRET_LEN`] characters).
    pub fn new(tokens: Option<Vec<(Role, String)>>, secret: String) -> Result<Self, String> {
        Self::rotating(tokens, secret, Vec::new())
    }

    /// As [`Auth::new`], accepting from peers the secrets `also_accepted` too (each at
    /// least [`MIN_SECRET_LEN`] characters) while sending only `secret`: the state of a node
    /// while the cluster secret is rotated.
    pub fn rotating(
        tokens: Option<Vec<(Role, String)>>,
        secret: String,
        also_accepted: Vec<String>,
    ) -> Result<Self, String> {
        let tokens = tokens
            .map(|list| {
                list.into_iter()
                    .map(|(role, hex_digest)| {
                        let bytes = hex::decode(hex_digest.trim())
                            .map_err(|e| format!("token digest is not hex: {e}"))?;
                        let d: Digest32 = bytes.try_into().map_err(|_| {
                            "token digest must be a SHA-256 (64 hex characters)".to_string()
                        })?;
                        Ok((role, d))
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
    /// token whose role does not allow it. A peer forwarding a request it authorised
    /// itself (cluster secret) passes.
    pub fn check(&self, headers: &HeaderMap, role: Role) -> Result<(), ApiError> {
        let Some(tokens) = &self.tokens else {
            return Ok(());
        };
        if self.is_peer(headers) {
            return Ok(());
        }
        let Some(token) = token_of(headers) else {
            return Err(ApiError::Unauthorized(
                "a token is required: send Authorization: Bearer TOKEN or X-Auth-Token".into(),
            ));
        };
        let d = digest(token.as_bytes());
        let Some((have, _)) = tokens.iter().find(|(_, t)| same(t, &d)) else {
            return Err(ApiError::Unauthorized("unknown token".into()));
        };
        if have.allows(role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "a {have:?} token may not do this: it needs the {role:?} role"
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
                (Role::Reader, hash_token("r-token")),
                (Role::Reporter, hash_token("p-token")),
                (Role::Admin, hash_token("a-token")),
            ]),
            "a-cluster-secret-of-length".into(),
        )
        .expect("valid settings");
        let status = |h: &HeaderMap, role| auth.check(h, role).map_err(|e| e.status().as_u16());
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
        let open = Auth::new(None, "a-cluster-secret-of-length".into()).expect("auth");
        assert!(open.check(&HeaderMap::new(), Role::Admin).is_ok());
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
        assert!(Auth::new(Some(vec![(Role::Admin, "xyz".into())]), long).is_err());
    }
}

//! The audit trail: who made each administrative change.
//!
//! Every request a route admits acts as an [`Actor`]: the name of the client token it showed
//! (configured beside the token's digest; an unnamed token is named by the start of its
//! digest), or, with client tokens disabled, the subject of the client certificate it came
//! with, or nobody in particular. A node that forwards a request to the leader sends the
//! actor along in [`ACTOR_HEADER`], which the leader believes only from a peer (cluster
//! secret, identity, and on a node with TLS a certificate the cluster CA signed).
//!
//! The leader stores the actor in the log entry of each change to a service
//! ([`registry_storage::Command::AdminBy`]), so every node's records show it as
//! `modified_by`, and writes a structured line under the `audit` target once the change is
//! committed ([`committed`]); membership changes, whose entries are openraft's own, get the
//! line only.

use std::fmt;
use std::sync::Arc;

use registry_storage::{AdminAction, Command};
use warp::http::{HeaderMap, HeaderValue};

/// Header of a forwarded request with the actor the forwarding node authorised.
pub const ACTOR_HEADER: &str = "x-registry-actor";

/// Longest actor recorded; a longer one (a long certificate subject) is cut, on a character
/// boundary.
pub const MAX_ACTOR_LEN: usize = 255;

/// Who a request acts as (see the module's documentation), as the audit trail writes it:
/// `token:NAME`, `cert:SUBJECT` or `anonymous`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(Arc<str>);

impl Actor {
    /// The holder of the client token named `name`.
    pub fn token(name: &str) -> Self {
        Self::cut(format!("token:{name}"))
    }

    /// The holder of a client certificate of `subject`.
    pub fn certificate(subject: &str) -> Self {
        Self::cut(format!("cert:{subject}"))
    }

    /// Nobody in particular: client tokens are disabled and no certificate was shown.
    pub fn anonymous() -> Self {
        Self("anonymous".into())
    }

    /// The actor a peer forwarded a request for, as its [`ACTOR_HEADER`] says; without one
    /// (a node of an older build), the forwarding node `node` itself.
    pub fn relayed(headers: &HeaderMap, node: &str) -> Self {
        match headers
            .get(ACTOR_HEADER)
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
        {
            Some(a) if !a.is_empty() => Self::cut(a.into_owned()),
            _ => Self::cut(format!("node:{node}")),
        }
    }

    fn cut(mut s: String) -> Self {
        if s.len() > MAX_ACTOR_LEN {
            let mut end = MAX_ACTOR_LEN;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
        Self(s.into())
    }

    /// As written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The header value a forwarding node sends (UTF-8 bytes; `None` if they cannot be a
    /// header value, a control character say: the actor then travels as the forwarding
    /// node).
    pub fn header_value(&self) -> Option<HeaderValue> {
        HeaderValue::from_bytes(self.0.as_bytes()).ok()
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who sent a request a route admitted, and how it came.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who it acts as.
    pub actor: Actor,
    /// Whether another node forwarded it here (the leader never forwards it again).
    pub forwarded: bool,
}

/// What an administrative command changes, for the audit line.
pub fn describe(cmd: &Command) -> String {
    let what = |action: &AdminAction| match action {
        AdminAction::Disable { reason: Some(r) } => format!("disable (reason: {r})"),
        AdminAction::Disable { reason: None } => "disable".to_string(),
        AdminAction::Enable => "enable".to_string(),
        AdminAction::ForceDown(true) => "force-down".to_string(),
        AdminAction::ForceDown(false) => "clear-force-down".to_string(),
        AdminAction::Remove => "remove".to_string(),
    };
    match cmd {
        Command::Admin { key, action, .. } | Command::AdminBy { key, action, .. } => {
            format!("{} {} on host {}", what(action), key.binary, key.host)
        }
        Command::Freeze { host, frozen, .. } | Command::FreezeBy { host, frozen, .. } => {
            format!("{} host {host}", if *frozen { "freeze" } else { "thaw" })
        }
        Command::Heartbeats { beats, .. } => format!("{} heartbeats", beats.len()),
        Command::Tick { .. } => "tick".to_string(),
        Command::ClockRate { rate, .. } => {
            format!("registry clock rate {} per mille", rate.permille())
        }
        Command::Settings { settings, .. } => format!(
            "liveness settings: service_down_time {} ms, unhealthy_zone_threshold {}",
            settings.service_down_time_ms,
            settings.unhealthy_zone_threshold()
        ),
    }
}

/// Writes the audit line of a change `actor` made, committed at log index `index` (`None`
/// for membership changes, whose index openraft does not return); `outcome` says what it did.
pub fn committed(actor: &Actor, change: &str, index: Option<u64>, outcome: &str) {
    tracing::info!(
        target: "audit",
        by = %actor,
        change,
        index,
        outcome,
        "administrative change committed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_are_named_and_bounded() {
        assert_eq!(Actor::token("ops").as_str(), "token:ops");
        assert_eq!(Actor::certificate("CN=a").as_str(), "cert:CN=a");
        let long = Actor::certificate(&"é".repeat(200));
        assert!(long.as_str().len() <= MAX_ACTOR_LEN && long.as_str().starts_with("cert:é"));
        let mut h = HeaderMap::new();
        assert_eq!(Actor::relayed(&h, "2").as_str(), "node:2");
        for a in [Actor::token("ops"), long] {
            h.insert(ACTOR_HEADER, a.header_value().expect("a header value"));
            assert_eq!(Actor::relayed(&h, "2"), a, "travels unchanged");
        }
    }
}

//! The write path: every change to the registry (heartbeats, admin and Cinder actions,
//! membership changes) is committed through the leader.
//!
//! On the leader, heartbeats are stamped with its clock and proposed in a group commit
//! ([`batcher`]); other commands are proposed one by one. A node that is not the leader
//! forwards the request there once ([`crate::forward`]), or waits for one to be elected;
//! all within `write_timeout`. The answer to a committed write lists the records it
//! produced ([`WritePath::written_response`]).

pub mod batcher;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use openraft::error::{ClientWriteError, RaftError};
use registry_storage::{Command, CommandResponse, Heartbeat, ServiceRecord};
use warp::http::Method;

use crate::audit::{self, Actor, Caller};
use crate::error::ApiError;
use crate::forward::{not_leader, Forwarding, Via};
use crate::json::list::{json_response, write_list};
use crate::json::service::push_service;
use crate::shared::Shared;
use batcher::{Batcher, WriteError};

/// What the write path did with a request.
pub enum Written {
    /// Committed and applied here: the records the command produced.
    Here(Vec<Arc<ServiceRecord>>),
    /// Committed and applied here, but it named no live record: nothing changed.
    NotFound,
    /// Forwarded to the leader: its answer, passed through.
    Forwarded(warp::reply::Response),
}

/// Where a call that must run on the leader ran.
pub enum OnLeader<T> {
    /// Here: its result.
    Here(T),
    /// On the leader, whose answer is passed through.
    Forwarded(warp::reply::Response),
}

/// A node's write path. Cheap to clone.
#[derive(Clone)]
pub struct WritePath {
    shared: Arc<Shared>,
    /// Group commit of heartbeats.
    batcher: Batcher,
    /// The way to the leader.
    forwarding: Forwarding,
}

impl WritePath {
    /// Writes through `shared`'s Raft, heartbeats through `batcher`, reaching the leader by
    /// `forwarding`.
    pub fn new(shared: Arc<Shared>, batcher: Batcher, forwarding: Forwarding) -> Self {
        Self {
            shared,
            batcher,
            forwarding,
        }
    }

    /// Commits heartbeats through the leader. On the leader they are stamped with its clock
    /// and proposed (in a group commit); elsewhere the request joins the heartbeats being
    /// forwarded to the leader in one request (once: the leader never forwards them again).
    /// `body` is the request's body, `beats` its validated heartbeats.
    pub async fn heartbeats(
        &self,
        beats: Vec<Heartbeat>,
        body: bytes::Bytes,
        forwarded: bool,
    ) -> Result<Written, ApiError> {
        let count = beats.len();
        let propose = || async {
            if let Some(fwd) = self.forwarding.leader_elsewhere() {
                // No need to ask Raft to refuse it.
                return Err(RaftError::APIError(ClientWriteError::ForwardToLeader(fwd)));
            }
            match self.batcher.submit(beats.clone()).await {
                Ok(res) => res,
                Err(stopped) => {
                    tracing::error!(error = %stopped, "heartbeat batcher gone");
                    Err(RaftError::Fatal(openraft::error::Fatal::Stopped))
                }
            }
        };
        let via = Via::Heartbeats { body, count };
        let done = self.on_leader_via(propose, &via, forwarded).await?;
        written(done)
    }

    /// Commits the command built by `cmd` (given the leader's time), made by `caller`,
    /// through the leader; a node that is not the leader forwards the original request
    /// (`route`, `body`) there. The leader records who made the change in the entry when
    /// every member reads that format ([`crate::transport::formats`]), and writes the audit
    /// line once it is committed.
    pub async fn command(
        &self,
        cmd: impl Fn(DateTime<Utc>) -> Command,
        route: (Method, &str),
        body: bytes::Bytes,
        caller: &Caller,
    ) -> Result<Written, ApiError> {
        let propose = || async {
            let cmd = self.with_actor(cmd(Utc::now()), &caller.actor);
            let change = audit::describe(&cmd);
            let stored = cmd.by().is_some();
            let written = self.shared.raft.client_write(cmd).await?;
            Ok((change, stored, written))
        };
        let done = match self.on_leader(propose, route, body, caller).await? {
            OnLeader::Here((change, stored, written)) => {
                let outcome = match (&written.data, stored) {
                    (CommandResponse::NotFound, _) => "no such service",
                    (_, true) => "applied, recorded in the entry",
                    (_, false) => "applied, not recorded in the entry (a member reads format 1)",
                };
                audit::committed(&caller.actor, &change, Some(written.log_id.index), outcome);
                OnLeader::Here(written.data)
            }
            OnLeader::Forwarded(resp) => OnLeader::Forwarded(resp),
        };
        written(done)
    }

    /// `cmd` saying that `actor` made it, if every other member of the group reads the
    /// format that takes; else `cmd` as it is.
    fn with_actor(&self, cmd: Command, actor: &Actor) -> Command {
        recorded(cmd, actor, self.shared.common_format())
    }

    /// Runs `call` (a write or a membership change) until it succeeds on the leader; a node
    /// that is not the leader forwards the original request (`route`, `body`) there once, or
    /// waits for one to be elected; all within `write_timeout`.
    pub async fn on_leader<T, F, Fut>(
        &self,
        call: F,
        route: (Method, &str),
        body: bytes::Bytes,
        caller: &Caller,
    ) -> Result<OnLeader<T>, ApiError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, WriteError>>,
    {
        let via = Via::Request {
            method: route.0,
            path_and_query: route.1,
            body,
            actor: Some(&caller.actor),
        };
        self.on_leader_via(call, &via, caller.forwarded).await
    }

    /// [`on_leader`](Self::on_leader), reaching the leader `via` the given way.
    async fn on_leader_via<T, F, Fut>(
        &self,
        call: F,
        via: &Via<'_>,
        forwarded: bool,
    ) -> Result<OnLeader<T>, ApiError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, WriteError>>,
    {
        let timeout = self.shared.settings.write_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            self.shared.check_quorum_contact()?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = async {
                tokio::select! {
                    res = call() => Ok(res),
                    e = self.quorum_lost() => Err(e),
                }
            };
            let err = match tokio::time::timeout(remaining, attempt).await {
                Ok(Err(lost)) => return Err(lost),
                Ok(Ok(res)) => Ok(res),
                Err(elapsed) => Err(elapsed),
            };
            let err = match err {
                Err(_) => {
                    return Err(ApiError::Unavailable(format!(
                        "not committed within {timeout:?}: the leader has no quorum"
                    )))
                }
                Ok(Ok(v)) => return Ok(OnLeader::Here(v)),
                Ok(Err(e)) => e,
            };
            let fwd = match err {
                RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => f,
                RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                    return Err(ApiError::Conflict(e.to_string()))
                }
                RaftError::Fatal(f) => {
                    return Err(ApiError::Unavailable(format!(
                        "raft on this node stopped: {f}"
                    )))
                }
            };
            if forwarded {
                return Err(not_leader(self.shared.id, &fwd));
            }
            if let Some(resp) = self.forwarding.forward_or_wait(&fwd, via, deadline).await? {
                return Ok(OnLeader::Forwarded(resp));
            }
        }
    }

    /// Resolves once this node leads without having heard from a quorum for longer than
    /// [`LEADER_CONTACT_BOUND`](crate::shared::LEADER_CONTACT_BOUND), so a write waiting on
    /// it fails fast (its outcome is then unknown: it commits only if the quorum comes back).
    async fn quorum_lost(&self) -> ApiError {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Err(e) = self.shared.check_quorum_contact() {
                return ApiError::Unavailable(format!("{e}; the write's outcome is unknown"));
            }
        }
    }

    /// The answer to a write: `{"services": [...]}` with the records it produced, in the
    /// listed form (the bytes `ServicesOut` serialises to), with their state now.
    pub fn written_response(&self, records: &[Arc<ServiceRecord>]) -> warp::reply::Response {
        let rule = self.shared.liveness().at(self.shared.registry_now());
        json_response(write_list(records, |buf, r| {
            push_service(buf, r, rule.state(r))
        }))
    }
}

/// `cmd` saying that `actor` made it when that form's format is at most `common`, the
/// newest format every member reads; else `cmd` in its older form, without who made it.
fn recorded(cmd: Command, actor: &Actor, common: u8) -> Command {
    let cmd = cmd.made_by(actor.as_str());
    if cmd.format() <= common {
        return cmd;
    }
    tracing::warn!(
        format = cmd.format(),
        common,
        "not recording who made the change in its entry: a member reads only an older format"
    );
    cmd.older_form()
}

/// What a committed write produced, as the routes answer it.
fn written(done: OnLeader<CommandResponse>) -> Result<Written, ApiError> {
    match done {
        OnLeader::Here(CommandResponse::Records(r)) => Ok(Written::Here(r)),
        OnLeader::Here(CommandResponse::NotFound) => Ok(Written::NotFound),
        OnLeader::Here(CommandResponse::Empty) => {
            Err(ApiError::Internal("entry applied without a result".into()))
        }
        OnLeader::Forwarded(resp) => Ok(Written::Forwarded(resp)),
    }
}

#[cfg(test)]
mod tests {
    use registry_storage::{AdminAction, ServiceKey};

    use super::*;

    /// Who made a change is put in its entry only when every member reads format 2; a
    /// member that reads format 1 keeps the leader proposing the older form.
    #[test]
    fn the_actor_is_recorded_only_when_every_member_reads_it() {
        let at = Utc::now();
        let admin = Command::Admin {
            at,
            key: ServiceKey::new("h", "b"),
            action: AdminAction::Enable,
        };
        let freeze = Command::Freeze {
            at,
            host: "h".into(),
            frozen: true,
        };
        let ops = Actor::token("ops");
        for cmd in [admin, freeze] {
            let stored = recorded(cmd.clone(), &ops, 2);
            assert_eq!(stored.by(), Some("token:ops"));
            assert_eq!(stored.format(), 2);
            assert_eq!(stored.clone().older_form(), cmd);
            assert_eq!(recorded(cmd.clone(), &ops, 1), cmd, "a format-1 member");
        }
        let tick = Command::Tick { at };
        assert_eq!(recorded(tick.clone(), &ops, 2), tick, "nothing to record");
    }
}

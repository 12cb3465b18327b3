//! Watches what every node lists while a scenario runs, to catch a service that kept
//! heartbeating being listed `down` (a false `down`, or flapping).
//!
//! The observer counts what it saw as well as what it found, so that it cannot pass having
//! looked at nothing. Each read of a node ends one of three ways:
//! - a **list**: the node answered; every service of the live prefix in it is judged;
//! - **refused**: no TCP connection could be made. On loopback that means nothing listens on
//!   the node's port: the node is down (killed, or restarted and not listening yet). Such a
//!   read says nothing about the registry, so it is counted apart and held against nothing;
//! - **failed**: the node accepted the connection but did not answer a list (a timeout, as
//!   from a paused node; an error status; a broken answer).
//!
//! Stale reads are served from a node's own state machine, with or without a leader, so a
//! running node answers them in every scenario, quorum loss included. The rule is therefore
//! judged over the reads against running nodes only: when most nodes are deliberately down
//! (quorum loss, a whole-cluster kill) their refused connections neither excuse nor hide
//! failures of the nodes that run, and a scenario fails if more than half of the reads
//! against running nodes failed, if no list was read, or if no live service was judged. Every
//! node must also have answered once before [`Observer::start`] returns, so the observer
//! watches each node from before the first fault.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use registry_api::wire::{Consistency, ServicesOut};
use registry_client::wire::State;
use registry_client::{ClientError, RegistryClient};

use crate::wait;

/// How long each read may take (a paused node must not hold the observer up).
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// What the reads of one node came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeReads {
    /// Lists read.
    pub lists: usize,
    /// Reads of a running node that did not answer a list.
    pub failed: usize,
    /// Reads refused at connect (the node was down).
    pub refused: usize,
}

/// What the observer saw.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Per node.
    pub nodes: BTreeMap<SocketAddr, NodeReads>,
    /// Rows of live services judged (each one found `up` or recorded as a violation).
    pub judged: usize,
    /// Every false `down`.
    pub violations: Vec<String>,
}

impl Observed {
    fn total(&self) -> NodeReads {
        self.nodes
            .values()
            .fold(NodeReads::default(), |a, n| NodeReads {
                lists: a.lists + n.lists,
                failed: a.failed + n.failed,
                refused: a.refused + n.refused,
            })
    }
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.total();
        write!(
            f,
            "lists {}, live rows judged {}, failed reads {} (of {} against running nodes), \
             refused (node down) {}, false down {}; per node",
            t.lists,
            self.judged,
            t.failed,
            t.lists + t.failed,
            t.refused,
            self.violations.len()
        )?;
        for (addr, n) in &self.nodes {
            write!(f, " {addr}: {}/{}/{}", n.lists, n.failed, n.refused)?;
        }
        write!(f, " (lists/failed/refused)")
    }
}

/// A background task listing every node's services (stale reads) every `pace`.
pub struct Observer {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Observed>>,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    /// Starts watching the nodes at `addrs`; services whose host starts with `live_prefix`
    /// must never be listed `down`. Returns once every node answered a list.
    pub async fn start(
        addrs: Vec<SocketAddr>,
        live_prefix: &'static str,
        pace: Duration,
    ) -> anyhow::Result<Self> {
        Self::spawn(addrs, None, live_prefix, pace, None).await
    }

    /// Like [`Observer::start`], over HTTPS trusting the CA in the PEM file `ca`.
    pub async fn start_tls(
        addrs: Vec<SocketAddr>,
        live_prefix: &'static str,
        pace: Duration,
        ca: &std::path::Path,
    ) -> anyhow::Result<Self> {
        Self::spawn(addrs, None, live_prefix, pace, Some(ca)).await
    }

    /// Like [`Observer::start`], listing only the services of `binary`: to keep the lists
    /// short when the scenario holds many records of other binaries.
    pub async fn start_binary(
        addrs: Vec<SocketAddr>,
        binary: &'static str,
        live_prefix: &'static str,
        pace: Duration,
    ) -> anyhow::Result<Self> {
        Self::spawn(addrs, Some(binary), live_prefix, pace, None).await
    }

    async fn spawn(
        addrs: Vec<SocketAddr>,
        binary: Option<&'static str>,
        live_prefix: &'static str,
        pace: Duration,
        ca: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Observed {
            nodes: addrs.iter().map(|a| (*a, NodeReads::default())).collect(),
            ..Observed::default()
        }));
        let (flag, out) = (stop.clone(), seen.clone());
        let clients: Vec<(SocketAddr, RegistryClient)> = addrs
            .iter()
            .map(|a| (*a, crate::client_tls([a.to_string()], READ_TIMEOUT, ca)))
            .collect();
        let task = tokio::spawn(async move {
            while !flag.load(Ordering::Relaxed) {
                let reads = clients.iter().map(|(addr, client)| async move {
                    (
                        *addr,
                        client.services(None, binary, Consistency::Stale).await,
                    )
                });
                let answers = futures::future::join_all(reads).await;
                record(
                    &mut out.lock().expect("observer lock"),
                    answers,
                    live_prefix,
                );
                tokio::time::sleep(pace).await;
            }
        });
        let observer = Self { stop, seen, task };
        wait::until(
            "the observer read a list from every node",
            Duration::from_secs(20),
            || async {
                let seen = observer.seen.lock().expect("observer lock");
                seen.nodes.values().all(|n| n.lists > 0).then_some(())
            },
        )
        .await?;
        Ok(observer)
    }

    /// Stops watching, prints what was seen as a `RESULT` line, and fails on a false `down`
    /// or when the observation could not have found one (see the module doc).
    pub async fn stop(self) -> anyhow::Result<Observed> {
        self.stop.store(true, Ordering::Relaxed);
        self.task
            .await
            .map_err(|e| anyhow::anyhow!("the observer task failed: {e}"))?;
        let seen = self.seen.lock().expect("observer lock").clone();
        eprintln!("RESULT observer: {seen}");
        judge(&seen)?;
        Ok(seen)
    }
}

/// The observer's verdict (see the module doc).
fn judge(seen: &Observed) -> anyhow::Result<()> {
    anyhow::ensure!(
        seen.violations.is_empty(),
        "services that kept heartbeating were listed down ({} times): {:?}; observer: {seen}",
        seen.violations.len(),
        &seen.violations[..seen.violations.len().min(5)]
    );
    let t = seen.total();
    anyhow::ensure!(
        t.lists > 0 && seen.judged > 0,
        "the false-down observer judged nothing (no list, or no live service in any): {seen}"
    );
    anyhow::ensure!(
        t.failed <= t.lists,
        "the false-down observer's reads of running nodes mostly failed ({} of {}): {seen}",
        t.failed,
        t.lists + t.failed
    );
    Ok(())
}

/// Adds one round of reads (`answers`, one per node) to what was seen.
fn record(
    seen: &mut Observed,
    answers: Vec<(SocketAddr, Result<ServicesOut, ClientError>)>,
    live_prefix: &str,
) {
    for (addr, res) in answers {
        let node = seen.nodes.entry(addr).or_default();
        let list = match res {
            Ok(list) => list,
            Err(ClientError::Unreachable { .. }) => {
                node.refused += 1;
                continue;
            }
            Err(_) => {
                node.failed += 1;
                continue;
            }
        };
        node.lists += 1;
        for s in list
            .services
            .iter()
            .filter(|s| s.host.starts_with(live_prefix))
        {
            seen.judged += 1;
            if s.state == State::Down {
                seen.violations.push(format!(
                    "{addr} listed {} {} down (report_count {})",
                    s.host, s.binary, s.report_count
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(nodes: &[(usize, usize, usize)], judged: usize) -> Observed {
        Observed {
            nodes: nodes
                .iter()
                .enumerate()
                .map(|(i, (lists, failed, refused))| {
                    (
                        SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                        NodeReads {
                            lists: *lists,
                            failed: *failed,
                            refused: *refused,
                        },
                    )
                })
                .collect(),
            judged,
            violations: Vec::new(),
        }
    }

    /// Refused reads (nodes down) are held against nothing; failed reads of running nodes
    /// are, and so is having judged nothing.
    #[test]
    fn most_failed_reads_of_running_nodes_fail_the_observer() {
        // Quorum loss: two nodes down most of the time, the third answering.
        assert!(judge(&observed(&[(30, 0, 0), (10, 0, 20), (10, 0, 20)], 100)).is_ok());
        // A paused node among answering ones.
        assert!(judge(&observed(&[(9, 0, 0), (6, 3, 0), (9, 0, 0)], 100)).is_ok());
        // Running nodes that mostly do not answer.
        assert!(judge(&observed(&[(3, 4, 0), (0, 0, 9)], 100)).is_err());
        // Nothing judged: no list, or lists without a live service.
        assert!(judge(&observed(&[(0, 0, 9)], 0)).is_err());
        assert!(judge(&observed(&[(9, 0, 0)], 0)).is_err());
        let mut down = observed(&[(9, 0, 0)], 10);
        down.violations.push("listed down".into());
        assert!(judge(&down).is_err(), "a false down fails");
    }
}

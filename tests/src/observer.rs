//! Watches what every node lists while a scenario runs, to catch a service that kept
//! heartbeating being listed `down` (a false `down`, or flapping).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use registry_api::client::RegistryClient;
use registry_api::liveness::State;
use registry_api::wire::Consistency;

/// A background task listing every node's services (stale reads) every `pace`.
pub struct Observer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl Observer {
    /// Starts watching the nodes at `addrs`; services whose host starts with `live_prefix`
    /// must never be listed `down`.
    pub fn start(addrs: Vec<SocketAddr>, live_prefix: &'static str, pace: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let clients: Vec<(SocketAddr, RegistryClient)> = addrs
                .iter()
                .map(|a| {
                    (
                        *a,
                        RegistryClient::new([a.to_string()], Duration::from_secs(1)),
                    )
                })
                .collect();
            let (mut observations, mut violations) = (0, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                for (addr, client) in &clients {
                    let Ok(list) = client.services(None, None, Consistency::Stale).await else {
                        continue;
                    };
                    observations += 1;
                    for s in &list.services {
                        if s.host.starts_with(live_prefix) && s.state == State::Down {
                            violations.push(format!(
                                "{addr} listed {} {} down (report_count {})",
                                s.host, s.binary, s.report_count
                            ));
                        }
                    }
                }
                tokio::time::sleep(pace).await;
            }
            (observations, violations)
        });
        Self { stop, task }
    }

    /// Stops watching; returns the number of lists seen and every false `down`.
    pub async fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

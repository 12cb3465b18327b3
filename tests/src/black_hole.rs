//! A port that takes every connection and never answers: a peer that hangs, so that a
//! request to it stays in flight until its sender gives up (a Raft RPC until its deadline).
//!
//! It runs on threads of its own, not on a tokio runtime, so that a test counting the tasks
//! of its runtime does not count it.

use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest request head recorded.
const MAX_HEAD: usize = 8 * 1024;

/// The listener, and what it was sent.
pub struct BlackHole {
    /// Where it listens.
    addr: SocketAddr,
    /// Set when it is stopped: the accept loop ends at its next connection.
    stopping: Arc<AtomicBool>,
    /// The request line of every request whose head arrived.
    requests: Arc<Mutex<Vec<String>>>,
    /// A handle on every connection taken, to close them when it is stopped.
    open: Arc<Mutex<Vec<TcpStream>>>,
    /// The accept loop, and a reader per connection.
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// The accept loop itself.
    accept: Option<JoinHandle<()>>,
}

impl BlackHole {
    /// Listens on `addr` (a port another listener just let go of: retried within a deadline
    /// while it is not free yet).
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = crate::wait::until(
            "the port is free for the black hole",
            Duration::from_secs(10),
            || async { TcpListener::bind(addr).ok() },
        )
        .await?;
        let stopping = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let open = Arc::new(Mutex::new(Vec::new()));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (stopping, requests, open, threads) = (
                stopping.clone(),
                requests.clone(),
                open.clone(),
                threads.clone(),
            );
            std::thread::Builder::new()
                .name("black-hole".into())
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stopping.load(Ordering::SeqCst) {
                            return;
                        }
                        let Ok(stream) = stream else { continue };
                        if let Ok(handle) = stream.try_clone() {
                            lock(&open).push(handle);
                        }
                        let requests = requests.clone();
                        if let Ok(reader) = std::thread::Builder::new()
                            .name("black-hole-conn".into())
                            .spawn(move || swallow(stream, &requests))
                        {
                            lock(&threads).push(reader);
                        }
                    }
                })?
        };
        Ok(Self {
            addr,
            stopping,
            requests,
            open,
            threads,
            accept: Some(accept),
        })
    }

    /// The request line (`POST /raft/snapshot HTTP/1.1`) of every request whose head arrived,
    /// in the order they arrived.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.requests).clone()
    }

    /// Closes every connection and stops listening; returns once its threads have ended.
    pub fn stop(mut self) {
        self.stop_threads();
    }

    /// Stops the accept loop, closes the connections and joins every thread (once).
    fn stop_threads(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees it is stopping.
        let _ = TcpStream::connect(self.addr);
        let _ = accept.join();
        for stream in lock(&self.open).drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let readers: Vec<JoinHandle<()>> = lock(&self.threads).drain(..).collect();
        for reader in readers {
            let _ = reader.join();
        }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// Reads what `stream` sends until it closes, answering nothing; records the request line
/// of its first request once the head has arrived.
fn swallow(mut stream: TcpStream, requests: &Mutex<Vec<String>>) {
    let mut head = Vec::new();
    let mut recorded = false;
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) if !recorded => {
                head.extend_from_slice(&buf[..n]);
                if head.windows(4).any(|w| w == b"\r\n\r\n") || head.len() > MAX_HEAD {
                    recorded = true;
                    let text = String::from_utf8_lossy(&head);
                    let line = text.lines().next().unwrap_or_default().to_string();
                    lock(requests).push(line);
                }
            }
            Ok(_) => {}
        }
    }
}

/// The value behind `m`, even if a thread panicked holding it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

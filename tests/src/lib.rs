//! Harnesses for the integration tests: clusters of registry nodes in this process
//! ([`inproc`]) or as `registry-node` processes ([`procs`]), a peer that never answers
//! ([`black_hole`]), waiting on conditions with
//! deadlines ([`wait`]), a history of what reporters were told and readers saw
//! ([`history`]), a watch for false `down`s ([`observer`]), the checks that end a fault
//! scenario ([`scenario`]), HTTP requests written by hand ([`raw_http`]), running
//! `registryctl` ([`cli`]), throwaway certificates for TLS ([`tls`]), small disks ([`tmpfs`]), and parsing `/metrics`
//! ([`exposition`]).

pub mod black_hole;
pub mod cli;
pub mod exposition;
pub mod history;
pub mod inproc;
pub mod observer;
pub mod procs;
pub mod raw_http;
pub mod scenario;
pub mod tls;
pub mod tmpfs;
pub mod wait;

/// A client of `endpoints`, each request bounded by `timeout` (building an HTTP client without
/// TLS cannot fail short of a broken system).
pub fn client(
    endpoints: impl IntoIterator<Item = impl Into<String>>,
    timeout: std::time::Duration,
) -> registry_client::RegistryClient {
    registry_client::RegistryClient::new(endpoints, timeout).expect("building an HTTP client")
}

/// A client of `endpoints` over HTTPS trusting `ca` (a PEM file), or over plain HTTP
/// without one.
pub fn client_tls(
    endpoints: impl IntoIterator<Item = impl Into<String>>,
    timeout: std::time::Duration,
    ca: Option<&std::path::Path>,
) -> registry_client::RegistryClient {
    match ca {
        None => client(endpoints, timeout),
        Some(ca) => {
            let tls = registry_client::ClientTls::from_files(Some(ca), None, None)
                .expect("reading the test CA");
            registry_client::RegistryClient::with_tls(endpoints, timeout, Some(&tls))
                .expect("building an HTTPS client")
        }
    }
}

/// Logs of the code under test, shown with `--nocapture` (`RUST_LOG` filters them).
pub fn init_test_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

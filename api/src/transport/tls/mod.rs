//! TLS on a node's port and between nodes (rustls with the ring provider).
//!
//! A node with a `[tls]` section ([`TlsConfig`]) serves HTTPS only: the accept loop
//! ([`crate::server::serve`]) hands each connection to [`NodeTls::accept`] inside the
//! connection's own task, bounded by the header timeout, and every request of the connection
//! carries what its handshake learnt as a [`ClientCert`] in its extensions
//! ([`WithClientCert`]). A client certificate is optional unless `require_client_cert`; one
//! that is presented must chain to the cluster CA, or the handshake fails. Requests between
//! nodes must show one (see [`crate::routes::route`]).
//!
//! The same files make the client side: this node's requests to its peers use `https://`
//! ([`Scheme`]), trust the cluster CA and nothing else, and present this node's certificate
//! ([`NodeTls::peer_client`]).
//!
//! A reload ([`NodeTls::reload`], on SIGHUP) reads all three files again and, once they all
//! load, puts them in place for the handshakes to come, on both sides ([`reloadable`]): the
//! certificate served and presented to peers, and the CA trusted for peers' servers and for
//! clients' certificates. Files that do not load leave everything in use, and say why.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;
use warp::http::Request;

pub mod reloadable;

use reloadable::{Current, ReloadableCert, ReloadableRoots};

/// The `[tls]` section of a node's config: PEM files, relative to the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// This node's certificate chain (PEM), its own certificate first. It names the node's
    /// advertised address (an IP or DNS subject alternative name): peers and clients check it.
    pub cert: PathBuf,
    /// The private key of `cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The cluster CA (PEM bundle): the only root this node trusts for its peers' and
    /// clients' certificates, and for its peers' servers.
    pub ca: PathBuf,
    /// Refuse, during the handshake, a client that presents no certificate. Without it a
    /// client may connect without one (and use a token); requests between nodes need one
    /// either way.
    #[serde(default)]
    pub require_client_cert: bool,
}

impl TlsConfig {
    /// The paths, each resolved against `base` when relative.
    pub fn resolve(&mut self, base: &Path) {
        for p in [&mut self.cert, &mut self.key, &mut self.ca] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
}

/// Which PEM file of a [`TlsConfig`] an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// `cert`: the node's certificate chain.
    Cert,
    /// `key`: its private key.
    Key,
    /// `ca`: the cluster CA bundle.
    Ca,
}

impl std::fmt::Display for TlsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsFile::Cert => "tls.cert (certificate chain)",
            TlsFile::Key => "tls.key (private key)",
            TlsFile::Ca => "tls.ca (cluster CA bundle)",
        })
    }
}

/// Why the TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{file} {}: cannot read: {source}", path.display())]
    Read {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not valid PEM, or holds nothing of what it should (no certificate, no
    /// private key).
    #[error("{file} {}: {source}", path.display())]
    Pem {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// Why (`no items found`: no PEM section of the expected kind).
        source: rustls::pki_types::pem::Error,
    },
    /// A certificate of the CA bundle cannot serve as a root.
    #[error("tls.ca {}: certificate {index} is not a usable CA certificate: {source}", path.display())]
    Anchor {
        /// The bundle's path.
        path: PathBuf,
        /// The certificate's position in the bundle, from 0.
        index: usize,
        /// Why.
        source: rustls::Error,
    },
    /// The key does not load, or does not match the certificate.
    #[error("tls.key {} with tls.cert {}: {source}", key.display(), cert.display())]
    Key {
        /// The certificate chain's path.
        cert: PathBuf,
        /// The key's path.
        key: PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// A certificate verifier (of clients, or of peers' servers) could not be built from
    /// the CA.
    #[error("tls.ca {}: {source}", path.display())]
    Verifier {
        /// The bundle's path.
        path: PathBuf,
        /// Why.
        source: rustls::server::VerifierBuilderError,
    },
    /// rustls refused the settings (no protocol version in common with the provider).
    #[error("TLS settings: {0}")]
    Config(#[source] rustls::Error),
}

/// Why a connection's TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client did not complete it in time.
    #[error("TLS handshake not completed within {0:?}")]
    TimedOut(Duration),
    /// It failed: not TLS (plain HTTP, say), a certificate the CA did not sign, a closed
    /// connection.
    #[error("TLS handshake failed: {0}")]
    Failed(#[source] std::io::Error),
}

/// What the TLS handshake of a request's connection learnt of the client, in the request's
/// extensions. A request that came over plain HTTP has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCert {
    /// The client presented no certificate.
    None,
    /// The client presented a certificate that chains to the cluster CA (the handshake
    /// refuses any other).
    Verified {
        /// Who it names: its subject's first common name, else its first DNS or IP subject
        /// alternative name, else `unnamed`.
        subject: String,
    },
}

impl ClientCert {
    /// What a connection whose client presented `chain` (`None`: no certificate) learnt;
    /// the chain has been verified by the handshake.
    fn of(chain: Option<&[CertificateDer<'static>]>) -> Self {
        match chain.and_then(<[_]>::first) {
            None => ClientCert::None,
            Some(end) => ClientCert::Verified {
                subject: subject_of(end).unwrap_or_else(|| "unnamed".to_string()),
            },
        }
    }
}

/// A certificate's notAfter, in seconds since the epoch.
fn not_after(der: &CertificateDer<'_>) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// The first common name of a certificate's subject, else its first DNS or IP subject
/// alternative name.
fn subject_of(der: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    if let Some(cn) = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
    {
        return Some(cn.to_string());
    }
    let san = cert.subject_alternative_name().ok().flatten()?;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::DNSName(d) => Some((*d).to_string()),
        GeneralName::IPAddress(b) => match b.len() {
            4 => <[u8; 4]>::try_from(*b)
                .ok()
                .map(|a| IpAddr::from(a).to_string()),
            16 => <[u8; 16]>::try_from(*b)
                .ok()
                .map(|a| IpAddr::from(a).to_string()),
            _ => None,
        },
        _ => None,
    })
}

/// The scheme of the URLs this node sends its peers requests at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (no `[tls]`).
    Http,
    /// HTTPS (with `[tls]`).
    Https,
}

impl Scheme {
    /// The scheme of a node with `tls`.
    pub fn of(tls: Option<&NodeTls>) -> Self {
        if tls.is_some() {
            Scheme::Https
        } else {
            Scheme::Http
        }
    }

    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The URL of `path` (starting with `/`) on the node at `addr` (`host:port`).
    pub fn url(self, addr: &str, path: &str) -> String {
        format!("{}://{addr}{path}", self.as_str())
    }
}

/// A builder of an HTTP client for requests to peers: with `tls`, HTTPS only, trusting the
/// cluster CA alone and presenting this node's certificate.
pub fn peer_client_builder(tls: Option<&NodeTls>) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    match tls {
        Some(tls) => builder
            .use_preconfigured_tls(tls.peer_client())
            .https_only(true),
        None => builder,
    }
}

/// The crypto provider of every TLS config of the node (named rather than process-wide, so
/// no other crate's choice of provider can change it).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a file of a [`TlsConfig`].
fn read(file: TlsFile, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        file,
        path: path.to_owned(),
        source,
    })
}

/// Every certificate of a PEM file; at least one.
fn certs(file: TlsFile, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(file, path)?;
    let pem_error = |source| TlsError::Pem {
        file,
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(pem_error(rustls::pki_types::pem::Error::NoItemsFound));
    }
    Ok(certs)
}

/// This node's certificate chain and private key.
fn chain_and_key(
    config: &TlsConfig,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = certs(TlsFile::Cert, &config.cert)?;
    let pem = read(TlsFile::Key, &config.key)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|source| TlsError::Pem {
        file: TlsFile::Key,
        path: config.key.clone(),
        source,
    })?;
    Ok((chain, key))
}

/// This node's certificate and key, checked to match.
fn certified_key(config: &TlsConfig, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let (chain, key) = chain_and_key(config)?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| key_error(config, source))
}

/// A key that does not load or match, as an error naming both files.
fn key_error(config: &TlsConfig, source: rustls::Error) -> TlsError {
    TlsError::Key {
        cert: config.cert.clone(),
        key: config.key.clone(),
        source,
    }
}

/// The cluster CA, as the roots of both verifiers, and the earliest notAfter of its
/// certificates (seconds since the epoch).
fn roots(config: &TlsConfig) -> Result<(Arc<RootCertStore>, Option<i64>), TlsError> {
    let ca = certs(TlsFile::Ca, &config.ca)?;
    let not_after = ca.iter().filter_map(not_after).min();
    let mut roots = RootCertStore::empty();
    for (index, der) in ca.into_iter().enumerate() {
        roots.add(der).map_err(|source| TlsError::Anchor {
            path: config.ca.clone(),
            index,
            source,
        })?;
    }
    Ok((Arc::new(roots), not_after))
}

/// The server side of connections: clients' certificates checked against `roots`, this
/// node's certificate from `cert`.
fn server_config(
    config: &TlsConfig,
    roots: &Arc<RootCertStore>,
    cert: &Arc<ReloadableCert>,
    provider: &Arc<CryptoProvider>,
) -> Result<rustls::ServerConfig, TlsError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), Arc::clone(provider));
    let verifier = if config.require_client_cert {
        verifier
    } else {
        verifier.allow_unauthenticated()
    }
    .build()
    .map_err(|source| TlsError::Verifier {
        path: config.ca.clone(),
        source,
    })?;
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::clone(cert) as Arc<dyn ResolvesServerCert>);
    // Every client of the registry speaks HTTP/1.1, and so does the server.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(server)
}

/// How peers' servers are checked: against `roots`.
fn server_verifier(
    config: &TlsConfig,
    roots: &Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    WebPkiServerVerifier::builder_with_provider(Arc::clone(roots), Arc::clone(provider))
        .build()
        .map_err(|source| TlsError::Verifier {
            path: config.ca.clone(),
            source,
        })
}

/// A node's TLS: the acceptor of its server and the client config of its requests to peers,
/// both reading the certificate and the CA in use ([`reloadable`]).
#[derive(Debug, Clone)]
pub struct NodeTls {
    /// Where the files are (for a reload).
    config: TlsConfig,
    /// This node's certificate and key, on both sides.
    cert: Arc<ReloadableCert>,
    /// The server side of each connection (rebuilt when the CA is reloaded).
    server: Arc<Current<rustls::ServerConfig>>,
    /// The CA peers' servers are checked against.
    roots: Arc<ReloadableRoots>,
    /// The client side of requests to peers: the CA as the only root, this node's
    /// certificate as its identity.
    peer_client: Arc<rustls::ClientConfig>,
    /// The earliest notAfter of the CA bundle's certificates (seconds since the epoch).
    ca_not_after: Arc<Current<Option<i64>>>,
}

impl NodeTls {
    /// Loads the files of `config` (paths already resolved).
    pub fn load(config: &TlsConfig) -> Result<Self, TlsError> {
        let provider = provider();
        let (roots, ca_not_after) = roots(config)?;
        let cert = Arc::new(ReloadableCert(Current::new(certified_key(
            config, &provider,
        )?)));
        let server = server_config(config, &roots, &cert, &provider)?;
        let verifier = Arc::new(ReloadableRoots(Current::new(server_verifier(
            config, &roots, &provider,
        )?)));
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .dangerous()
            .with_custom_certificate_verifier(
                Arc::clone(&verifier) as Arc<dyn rustls::client::danger::ServerCertVerifier>
            )
            .with_client_cert_resolver(
                Arc::clone(&cert) as Arc<dyn rustls::client::ResolvesClientCert>
            );
        Ok(Self {
            config: config.clone(),
            cert,
            server: Arc::new(Current::new(server)),
            roots: verifier,
            peer_client: Arc::new(client),
            ca_not_after: Arc::new(Current::new(ca_not_after)),
        })
    }

    /// When the certificate in use stops being valid (its notAfter, seconds since the
    /// epoch); it follows a reload.
    pub fn cert_not_after(&self) -> Option<i64> {
        self.cert.0.get().cert.first().and_then(not_after)
    }

    /// When the first certificate of the CA bundle in use stops being valid (seconds since
    /// the epoch); it follows a reload.
    pub fn ca_not_after(&self) -> Option<i64> {
        *self.ca_not_after.get()
    }

    /// The settings it was loaded from.
    pub fn config(&self) -> &TlsConfig {
        &self.config
    }

    /// The client config for requests to peers (give it to reqwest's
    /// `use_preconfigured_tls`); it follows reloads.
    pub fn peer_client(&self) -> rustls::ClientConfig {
        (*self.peer_client).clone()
    }

    /// Reads the certificate, key and CA files again and, once all of them load (the key
    /// matching the certificate), uses them for the handshakes to come: the certificate
    /// served and presented to peers, the CA trusted for clients' certificates and peers'
    /// servers. Otherwise keeps everything in use and says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let provider = provider();
        let (roots, ca_not_after) = roots(&self.config)?;
        let key = certified_key(&self.config, &provider)?;
        let server = server_config(&self.config, &roots, &self.cert, &provider)?;
        let verifier = server_verifier(&self.config, &roots, &provider)?;
        self.cert.0.set(key);
        self.server.set(server);
        self.roots.0.set(verifier);
        self.ca_not_after.set(ca_not_after);
        Ok(())
    }

    /// Runs the TLS handshake on `stream`, for at most `timeout`.
    pub async fn accept(
        &self,
        stream: TcpStream,
        timeout: Duration,
    ) -> Result<(TlsStream<TcpStream>, ClientCert), HandshakeError> {
        let acceptor = TlsAcceptor::from(self.server.get());
        let tls = tokio::time::timeout(timeout, acceptor.accept(stream))
            .await
            .map_err(|_| HandshakeError::TimedOut(timeout))?
            .map_err(HandshakeError::Failed)?;
        let cert = ClientCert::of(tls.get_ref().1.peer_certificates());
        Ok((tls, cert))
    }
}

/// A connection's service that puts its [`ClientCert`] in each request's extensions.
#[derive(Debug, Clone)]
pub struct WithClientCert<S> {
    /// The service of the connection.
    pub inner: S,
    /// What the connection's handshake learnt; `None` on a plain HTTP connection.
    pub cert: Option<ClientCert>,
}

impl<S, B> Service<Request<B>> for WithClientCert<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(cert) = &self.cert {
            req.extensions_mut().insert(cert.clone());
        }
        self.inner.call(req)
    }
}

//! Throwaway certificates for TLS tests (rcgen): a cluster CA, a certificate per node
//! (subject alternative names `127.0.0.1` and `localhost`, usable as server and client), a
//! client certificate, and a second CA with a client certificate of its own, which the
//! cluster must not trust.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use registry_api::transport::tls::TlsConfig;
use tempfile::TempDir;

/// A CA and the certificates it signed, as PEM files in a temporary directory (removed when
/// the last clone is dropped).
#[derive(Clone)]
pub struct TestPki {
    /// Where the files are.
    dir: Arc<TempDir>,
    /// The cluster CA, to sign more certificates with.
    cluster: Arc<(rcgen::Certificate, KeyPair)>,
    /// The address each node's certificate names, by node index.
    ips: Arc<Vec<std::net::IpAddr>>,
    /// Whether the nodes refuse clients without a certificate during the handshake.
    pub require_client_cert: bool,
}

/// A second CA, made for a rotation of the cluster CA.
#[derive(Clone)]
pub struct NextCa(Arc<(rcgen::Certificate, KeyPair)>);

impl NextCa {
    /// Its certificate (PEM).
    pub fn pem(&self) -> String {
        self.0 .0.pem()
    }
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

/// A self-signed CA named `name`.
fn ca(name: &str) -> anyhow::Result<(rcgen::Certificate, KeyPair)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert, key))
}

/// A certificate for `name` with `sans`, signed by `issuer`, usable as server and client;
/// written as `dir/file.pem` and `dir/file-key.pem`.
fn leaf(
    dir: &Path,
    file: &str,
    name: &str,
    sans: &[&str],
    issuer: &(rcgen::Certificate, KeyPair),
) -> anyhow::Result<CertFiles> {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer.0, &issuer.1)?;
    let files = CertFiles {
        cert: dir.join(format!("{file}.pem")),
        key: dir.join(format!("{file}-key.pem")),
    };
    std::fs::write(&files.cert, cert.pem())?;
    std::fs::write(&files.key, key.serialize_pem())?;
    Ok(files)
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("dir", &self.dir.path())
            .field("require_client_cert", &self.require_client_cert)
            .finish_non_exhaustive()
    }
}

impl TestPki {
    /// A CA with certificates for nodes 1 to `nodes`, a client, and a foreign CA's client.
    pub fn new(nodes: usize) -> anyhow::Result<Self> {
        Self::for_ips(&vec![std::net::Ipv4Addr::LOCALHOST.into(); nodes])
    }

    /// Like [`TestPki::new`], node `i + 1` naming `ips[i]` (as well as 127.0.0.1 and
    /// localhost) in its certificate: for nodes on loopback addresses of their own.
    pub fn for_ips(ips: &[std::net::IpAddr]) -> anyhow::Result<Self> {
        let dir = TempDir::new()?;
        let cluster = ca("registry test CA")?;
        std::fs::write(dir.path().join("ca.pem"), cluster.0.pem())?;
        for (i, ip) in ips.iter().enumerate() {
            let name = format!("node{}", i + 1);
            let ip = ip.to_string();
            leaf(
                dir.path(),
                &name,
                &name,
                &[ip.as_str(), "127.0.0.1", "localhost"],
                &cluster,
            )?;
        }
        leaf(dir.path(), "client", "registry test client", &[], &cluster)?;
        let other = ca("another CA")?;
        std::fs::write(dir.path().join("other-ca.pem"), other.0.pem())?;
        leaf(
            dir.path(),
            "other-client",
            "node-of-another-CA",
            &["127.0.0.1"],
            &other,
        )?;
        Ok(Self {
            dir: Arc::new(dir),
            cluster: Arc::new(cluster),
            ips: Arc::new(ips.to_vec()),
            require_client_cert: false,
        })
    }

    /// Writes a new certificate and key for node `id` over its files (a renewal).
    pub fn reissue_node(&self, id: u64) -> anyhow::Result<CertFiles> {
        self.issue_node(id, &self.cluster)
    }

    /// A certificate for node `id` issued by `issuer`, naming the addresses its first one
    /// named, written over its files.
    fn issue_node(
        &self,
        id: u64,
        issuer: &(rcgen::Certificate, KeyPair),
    ) -> anyhow::Result<CertFiles> {
        let name = format!("node{id}");
        let ip = usize::try_from(id)
            .ok()
            .and_then(|id| self.ips.get(id.checked_sub(1)?))
            .map_or_else(|| "127.0.0.1".to_string(), ToString::to_string);
        leaf(
            self.dir.path(),
            &name,
            &name,
            &[ip.as_str(), "127.0.0.1", "localhost"],
            issuer,
        )
    }

    /// A new CA, for a rotation of the cluster CA: the certificates it issues
    /// ([`TestPki::reissue_node_with`]) replace the first CA's.
    pub fn next_ca(&self) -> anyhow::Result<NextCa> {
        Ok(NextCa(Arc::new(ca("next registry test CA")?)))
    }

    /// The first cluster CA's certificate (PEM).
    pub fn first_ca_pem(&self) -> String {
        self.cluster.0.pem()
    }

    /// Writes the cluster CA file (what every node and harness client trusts) as `pems`, one
    /// after the other: a bundle of the old and the next CA while it rotates.
    pub fn write_ca(&self, pems: &[&str]) -> anyhow::Result<()> {
        std::fs::write(self.ca(), pems.concat())?;
        Ok(())
    }

    /// Writes a new certificate and key for node `id`, issued by `next`, over its files.
    pub fn reissue_node_with(&self, id: u64, next: &NextCa) -> anyhow::Result<CertFiles> {
        self.issue_node(id, &next.0)
    }

    /// The cluster CA (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The other CA (PEM), which the cluster does not trust.
    pub fn other_ca(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }

    /// The certificate of node `id`.
    pub fn node(&self, id: u64) -> CertFiles {
        self.files(&format!("node{id}"))
    }

    /// The client certificate the cluster CA signed.
    pub fn client(&self) -> CertFiles {
        self.files("client")
    }

    /// A client certificate another CA signed.
    pub fn other_client(&self) -> CertFiles {
        self.files("other-client")
    }

    fn files(&self, name: &str) -> CertFiles {
        CertFiles {
            cert: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}-key.pem")),
        }
    }

    /// The `[tls]` section of node `id`.
    pub fn node_config(&self, id: u64) -> TlsConfig {
        let files = self.node(id);
        TlsConfig {
            cert: files.cert,
            key: files.key,
            ca: self.ca(),
            require_client_cert: self.require_client_cert,
        }
    }
}

/// The certificate the TLS server at `addr` serves (DER), as a client trusting the first
/// certificate of the `ca` file sees it.
pub async fn served_certificate(addr: std::net::SocketAddr, ca: &Path) -> anyhow::Result<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(ca)?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    let handshake = connector.connect(name, tcp);
    let tls = tokio::time::timeout(std::time::Duration::from_secs(5), handshake).await??;
    let certs = tls
        .get_ref()
        .1
        .peer_certificates()
        .ok_or_else(|| anyhow::anyhow!("the server at {addr} served no certificate"))?;
    Ok(certs[0].as_ref().to_vec())
}

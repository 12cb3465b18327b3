//! HTTPS to the registry: the CA bundle a client trusts (the cluster CA; no other root is
//! built in) and, optionally, the certificate it presents.

use std::path::Path;

use crate::error::ClientError;

/// The TLS settings of a client: PEM bytes, checked when the client is built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// The CA bundle whose certificates are the client's only roots.
    ca: Option<Vec<u8>>,
    /// The client's certificate chain followed by its private key, presented to nodes that
    /// ask for one.
    identity: Option<Vec<u8>>,
}

/// Reads one PEM file, naming it in the error.
fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::TlsFile {
        what,
        path: path.to_owned(),
        source,
    })
}

impl ClientTls {
    /// Settings from files: `ca`, the CA bundle to trust; `cert` and `key`, the client's
    /// certificate chain and private key (both or neither).
    pub fn from_files(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let mut tls = Self::default();
        if let Some(ca) = ca {
            tls = tls.with_ca_pem(read("the CA bundle", ca)?);
        }
        match (cert, key) {
            (Some(cert), Some(key)) => {
                tls = tls.with_identity_pem(
                    &read("the client certificate", cert)?,
                    &read("the client key", key)?,
                );
            }
            (None, None) => {}
            _ => {
                return Err(ClientError::Invalid(
                    "a client certificate needs its key: give both or neither".into(),
                ))
            }
        }
        Ok(tls)
    }

    /// Trusts the certificates of the PEM bundle `pem` (and no built-in root).
    pub fn with_ca_pem(mut self, pem: Vec<u8>) -> Self {
        self.ca = Some(pem);
        self
    }

    /// Presents the certificate chain `cert` with its private key `key` (both PEM).
    pub fn with_identity_pem(mut self, cert: &[u8], key: &[u8]) -> Self {
        let mut both = cert.to_vec();
        if !both.ends_with(b"\n") {
            both.push(b'\n');
        }
        both.extend_from_slice(key);
        self.identity = Some(both);
        self
    }

    /// Whether a CA bundle is set.
    pub fn has_ca(&self) -> bool {
        self.ca.is_some()
    }

    /// `builder` with these settings.
    pub(crate) fn apply(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, ClientError> {
        builder = builder.use_rustls_tls().tls_built_in_root_certs(false);
        if let Some(ca) = &self.ca {
            let certs = reqwest::Certificate::from_pem_bundle(ca)
                .map_err(|e| ClientError::TlsPem("the CA bundle", e))?;
            if certs.is_empty() {
                return Err(ClientError::Invalid(
                    "the CA bundle holds no certificate".into(),
                ));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(identity) = &self.identity {
            let identity = reqwest::Identity::from_pem(identity)
                .map_err(|e| ClientError::TlsPem("the client certificate and key", e))?;
            builder = builder.identity(identity);
        }
        Ok(builder)
    }
}

//! The certificates of `init-cluster --tls` (rcgen): a CA, one certificate per node naming
//! its host (for serving and for mutual TLS towards its peers), and a client certificate.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use super::init_cluster::{Member, OutFile};
use super::CliError;

fn pki_error(what: &str, e: rcgen::Error) -> CliError {
    CliError::Invalid(format!("making {what}: {e}"))
}

/// Validity from now (less a minute, for clocks slightly behind) for `days`.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

/// A certificate (PEM) and its key (PEM, private).
fn pair(name: &str, cert: &rcgen::Certificate, key: &KeyPair) -> [OutFile; 2] {
    [
        OutFile {
            name: format!("{name}.pem"),
            contents: cert.pem(),
            private: false,
        },
        OutFile {
            name: format!("{name}-key.pem"),
            contents: key.serialize_pem(),
            private: true,
        },
    ]
}

/// The CA, `nodeN` for each member and `client`, valid for `days`.
pub(super) fn make(nodes: &[Member], days: u32) -> Result<Vec<OutFile>, CliError> {
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| pki_error("the CA", e))?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "registry cluster CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca_params, days);
    let ca_key = KeyPair::generate().map_err(|e| pki_error("the CA's key", e))?;
    let ca = ca_params
        .self_signed(&ca_key)
        .map_err(|e| pki_error("the CA", e))?;
    let mut files: Vec<OutFile> = pair("ca", &ca, &ca_key).into();

    let leaf = |name: &str, cn: &str, sans: Vec<String>, server: bool| {
        let mut params = CertificateParams::new(sans).map_err(|e| pki_error(name, e))?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = if server {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        validity(&mut params, days);
        let key = KeyPair::generate().map_err(|e| pki_error(name, e))?;
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .map_err(|e| pki_error(name, e))?;
        Ok::<_, CliError>(pair(name, &cert, &key))
    };
    for m in nodes {
        let name = format!("node{}", m.id);
        files.extend(leaf(&name, &name, vec![m.host.clone()], true)?);
    }
    files.extend(leaf("client", "registry client", Vec::new(), false)?);
    Ok(files)
}

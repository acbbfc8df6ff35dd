//! `replog cluster --tls`: a throwaway CA and one certificate per local node and for the CLI,
//! made with rcgen and written under the cluster's data folder.

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::fs;
use std::path::{Path, PathBuf};

/// Where one identity's files went.
#[derive(Debug)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The files of a throwaway local cluster.
#[derive(Debug)]
pub struct ClusterCertificates {
    pub ca: PathBuf,
    /// One per node, in order.
    pub nodes: Vec<Identity>,
    pub cli: Identity,
}

/// Makes a CA, certificates naming 127.0.0.1 and localhost for `nodes` nodes, and a client-only
/// certificate for the CLI (it names no address, so it cannot pass as a peer) under `folder`
/// (created if missing).
pub fn make(folder: &Path, nodes: u16) -> Result<ClusterCertificates, String> {
    let fail = |e: rcgen::Error| format!("making certificates: {e}");
    fs::create_dir_all(folder).map_err(|e| format!("creating {}: {e}", folder.display()))?;
    let ca_key = KeyPair::generate().map_err(fail)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "replog throwaway CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca = ca_params.self_signed(&ca_key).map_err(fail)?;
    let ca_path = folder.join("ca.pem");
    write(&ca_path, &ca.pem())?;
    let identity = |name: &str, role: Role| -> Result<Identity, String> {
        let key = KeyPair::generate().map_err(fail)?;
        let cert = leaf(name, role, &key, &ca, &ca_key).map_err(fail)?;
        let paths =
            Identity { cert: folder.join(format!("{name}.pem")), key: folder.join(format!("{name}.key")) };
        write(&paths.cert, &cert.pem())?;
        write(&paths.key, &key.serialize_pem())?;
        Ok(paths)
    };
    let nodes =
        (1..=nodes).map(|k| identity(&format!("node{k}"), Role::Node)).collect::<Result<Vec<_>, _>>()?;
    let cli = identity("cli", Role::Client)?;
    Ok(ClusterCertificates { ca: ca_path, nodes, cli })
}

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// A node: both sides of a connection (it serves, and dials its peers), naming 127.0.0.1
    /// and localhost.
    Node,
    /// A client: client auth only, naming no address (a DNS name of its own).
    Client,
}

/// A certificate for `role`, signed by the CA.
fn leaf(
    name: &str,
    role: Role,
    key: &KeyPair,
    ca: &Certificate,
    ca_key: &KeyPair,
) -> Result<Certificate, rcgen::Error> {
    let (names, usages) = match role {
        Role::Node => (
            vec!["127.0.0.1".to_string(), "localhost".to_string()],
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        ),
        Role::Client => (vec![format!("{name}.replog.invalid")], vec![ExtendedKeyUsagePurpose::ClientAuth]),
    };
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = usages;
    params.signed_by(key, ca, ca_key)
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

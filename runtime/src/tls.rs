//! Mutual TLS: the certificate, key and CA files read into rustls configurations, checked for
//! their validity dates, re-read on demand (SIGHUP), and the check that a peer's certificate
//! names the address it claims in its hello.
//!
//! Every connection of a node started with `--tls-cert/--tls-key/--tls-ca` is TLS 1.3 and both
//! sides present a certificate signed by the CA. The client side checks the server's
//! certificate against the address it dialled (an IP SAN).

use rustls::client::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::RootCertStore;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use x509_parser::extensions::GeneralName;

/// The three files of a TLS identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// This side's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificate(s) (PEM) that must have signed the other side's certificate.
    pub ca: PathBuf,
}

/// Why the TLS files make no configuration: the text names the file.
#[derive(Debug)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// The configurations made from one reading of the files.
#[derive(Debug)]
pub struct TlsConfigs {
    /// For accepted connections: requires a client certificate from the CA.
    pub server: Arc<ServerConfig>,
    /// For connections this side opens: presents our certificate, checks the server's.
    pub client: Arc<ClientConfig>,
}

/// A node's TLS identity: the files and their current configurations, which `reload` swaps
/// (new connections use the new ones; open connections keep theirs).
#[derive(Debug)]
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<TlsConfigs>>,
}

impl Tls {
    /// Reads the files; fails on an unreadable, malformed, expired or not-yet-valid file.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let configs = configs(&files)?;
        Ok(Tls { files, current: RwLock::new(Arc::new(configs)) })
    }

    /// Re-reads the files; on failure the current configurations stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let configs = configs(&self.files)?;
        *self.current.write().expect("tls lock") = Arc::new(configs);
        Ok(())
    }

    /// The configurations for new connections.
    pub fn configs(&self) -> Arc<TlsConfigs> {
        Arc::clone(&self.current.read().expect("tls lock"))
    }

    /// The files it reads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// A new server-side TLS session for an accepted connection.
pub fn accept(configs: &TlsConfigs) -> rustls::Connection {
    rustls::ServerConnection::new(Arc::clone(&configs.server)).expect("server config is TLS 1.3").into()
}

/// A new client-side TLS session to the node at `address` (its certificate must name the IP).
pub fn dial(config: &Arc<ClientConfig>, address: SocketAddr) -> rustls::ClientConnection {
    let name = ServerName::IpAddress(address.ip().into());
    rustls::ClientConnection::new(Arc::clone(config), name).expect("client config is TLS 1.3")
}

/// The configuration this process's client connections (`Link`, `Pipelined`: the commands, a
/// joining node's requests) use; none means plain TCP. A node replaces it when SIGHUP re-reads
/// its files.
static CLIENT_CONFIG: RwLock<Option<Arc<ClientConfig>>> = RwLock::new(None);

/// Makes every later client connection of this process TLS with `config`.
pub fn set_client_config(config: Arc<ClientConfig>) {
    *CLIENT_CONFIG.write().expect("client config lock") = Some(config);
}

/// The process-wide client configuration, if any.
pub fn client_config() -> Option<Arc<ClientConfig>> {
    CLIENT_CONFIG.read().expect("client config lock").clone()
}

/// Whether `certificate` names `address`: an IP SAN equal to its IP. A DNS SAN proves nothing
/// here: a node's address is an IP, and a node name is the caller's own claim, bound to no
/// member by the configuration, so a certificate naming any DNS name could claim any address.
pub fn certificate_names(certificate: &CertificateDer<'_>, address: SocketAddr) -> bool {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(certificate.as_ref()) else {
        return false;
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return false;
    };
    let ip = address.ip();
    san.value.general_names.iter().any(|general| match general {
        GeneralName::IPAddress(bytes) => match ip {
            std::net::IpAddr::V4(v4) => *bytes == v4.octets(),
            std::net::IpAddr::V6(v6) => *bytes == v6.octets(),
        },
        _ => false,
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn configs(files: &TlsFiles) -> Result<TlsConfigs, TlsError> {
    let certs = read_certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsError(format!("reading the key {}: {e}", files.key.display())))?;
    let cas = read_authorities(&files.ca)?;
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(ca).map_err(|e| TlsError(format!("the CA {}: {e}", files.ca.display())))?;
    }
    let roots = Arc::new(roots);
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
        .build()
        .map_err(|e| TlsError(format!("the CA {}: {e}", files.ca.display())))?;
    let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(|e| {
            TlsError(format!("the certificate {} and key {}: {e}", files.cert.display(), files.key.display()))
        })?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| {
            TlsError(format!("the certificate {} and key {}: {e}", files.cert.display(), files.key.display()))
        })?;
    Ok(TlsConfigs { server: Arc::new(server), client: Arc::new(client) })
}

/// Every certificate of a PEM file, each checked to be valid now.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("reading the certificates {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{} holds no certificate", path.display())));
    }
    for cert in &certs {
        check_validity(path, cert)?;
    }
    Ok(certs)
}

/// The CA file's certificates, at least one of them valid now. An expired one among valid ones
/// is left out with a warning (a bundle holding the old and the new CA during a rotation); one
/// not valid yet is kept with a warning (this clock may be a little behind the new CA's start,
/// and verification checks dates anyway). A file with none valid now is refused, naming the
/// first one's dates.
fn read_authorities(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("reading the certificates {}: {e}", path.display())))?;
    let mut kept = Vec::new();
    let mut invalid = Vec::new();
    for cert in certs {
        match check_validity(path, &cert) {
            Ok(()) => kept.push(cert),
            Err(error) => invalid.push((cert, error)),
        }
    }
    if kept.is_empty() {
        return Err(invalid
            .into_iter()
            .next()
            .map(|(_, error)| error)
            .unwrap_or_else(|| TlsError(format!("{} holds no certificate", path.display()))));
    }
    for (cert, error) in invalid {
        if starts_later(&cert) {
            tracing::warn!("keeping a CA certificate beside a valid one: {error}");
            kept.push(cert);
        } else {
            tracing::warn!("leaving out a CA certificate: {error}");
        }
    }
    Ok(kept)
}

/// Whether `cert`'s validity begins after now (so it has not expired).
fn starts_later(cert: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(cert.as_ref())
        .is_ok_and(|(_, parsed)| x509_parser::time::ASN1Time::now() < parsed.validity().not_before)
}

/// Refuses a certificate that is expired or not valid yet, naming the file and its dates.
fn check_validity(path: &Path, cert: &CertificateDer<'_>) -> Result<(), TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| TlsError(format!("{}: not a certificate: {e}", path.display())))?;
    let validity = parsed.validity();
    if validity.is_valid() {
        return Ok(());
    }
    let now = x509_parser::time::ASN1Time::now();
    let state = if now < validity.not_before { "not valid yet" } else { "expired" };
    Err(TlsError(format!(
        "the certificate in {} ({}) is {state}: valid from {} to {}",
        path.display(),
        parsed.subject(),
        validity.not_before,
        validity.not_after
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(names: &[&str], expired: bool) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, "node1");
        if expired {
            params.not_before = rcgen::date_time_ymd(2001, 2, 3);
            params.not_after = rcgen::date_time_ymd(2002, 3, 4);
        }
        params.self_signed(&key).expect("certificate").der().clone()
    }

    #[test]
    fn a_certificate_names_its_ip_sans_only() {
        let certificate = certificate(&["127.0.0.1", "::1", "node1", "10.0.0.1.invalid"], false);
        let address = |text: &str| text.parse::<SocketAddr>().expect("address");
        assert!(certificate_names(&certificate, address("127.0.0.1:8080")));
        assert!(certificate_names(&certificate, address("[::1]:8080")));
        assert!(!certificate_names(&certificate, address("127.0.0.2:8080")));
        // A DNS SAN (a node name) names no address: the caller chooses the name it gives.
        assert!(!certificate_names(&certificate, address("10.0.0.1:8080")));
    }

    #[test]
    fn an_expired_ca_among_valid_ones_is_left_out_and_alone_is_refused() {
        let pem = |expired: bool| {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            if expired {
                params.not_before = rcgen::date_time_ymd(2001, 2, 3);
                params.not_after = rcgen::date_time_ymd(2002, 3, 4);
            }
            params.self_signed(&key).expect("CA").pem()
        };
        let pem_from = |year: i32| {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.not_before = rcgen::date_time_ymd(year, 1, 1);
            params.not_after = rcgen::date_time_ymd(year + 1, 1, 1);
            params.self_signed(&key).expect("CA").pem()
        };
        let dir = std::env::temp_dir().join(format!("replog-tls-cas-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let bundle = dir.join("bundle.pem");
        std::fs::write(&bundle, format!("{}{}", pem(true), pem(false))).expect("write");
        assert_eq!(read_authorities(&bundle).expect("one valid CA").len(), 1);
        let old = dir.join("old.pem");
        std::fs::write(&old, pem(true)).expect("write");
        let error = read_authorities(&old).expect_err("only an expired CA").to_string();
        assert!(error.contains("old.pem") && error.contains("expired") && error.contains("2002"), "{error}");
        // One not valid yet beside a valid one is kept: this clock may lag the new CA's start.
        let rotating = dir.join("rotating.pem");
        std::fs::write(&rotating, format!("{}{}", pem(false), pem_from(2999))).expect("write");
        assert_eq!(read_authorities(&rotating).expect("a valid CA").len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_expired_certificate_is_refused_naming_file_and_dates() {
        let error = check_validity(Path::new("certs/node1.pem"), &certificate(&["127.0.0.1"], true))
            .expect_err("expired");
        let text = error.to_string();
        assert!(text.contains("certs/node1.pem (CN=node1) is expired"), "{text}");
        assert!(text.contains("2001") && text.contains("2002"), "{text}");
        assert!(check_validity(Path::new("ok.pem"), &certificate(&["127.0.0.1"], false)).is_ok());
    }
}

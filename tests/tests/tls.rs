//! Mutual TLS on real processes: a TLS cluster serves the CLI (through the `REPLOG_TLS_*`
//! variables), and every bad caller is refused with a logged reason while the node keeps
//! serving: a certificate from another CA, an expired one, a peer hello claiming an address its
//! certificate does not name, a plain-text client, garbage in the handshake. All certificates
//! are made here with rcgen.

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use replog_core::NodeId;
use replog_runtime::codec::{self, Frame};
use replog_runtime::frame;
use replog_tests::TestCluster;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// A CA and the files of the certificates it signed.
struct Pki {
    dir: PathBuf,
    ca: Certificate,
    ca_key: KeyPair,
    ca_path: PathBuf,
}

/// A certificate's and its key's files.
struct Issued {
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let ca_key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca = params.self_signed(&ca_key).expect("CA");
        let ca_path = dir.join(format!("{name}.pem"));
        std::fs::write(&ca_path, ca.pem()).expect("write CA");
        Pki { dir: dir.to_path_buf(), ca, ca_key, ca_path }
    }

    /// A certificate for `names` (IPs or DNS names); `expired` makes it valid only in 2000.
    fn issue(&self, file: &str, names: &[&str], expired: bool) -> Issued {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2000, 12, 31);
        }
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).expect("sign");
        let issued =
            Issued { cert: self.dir.join(format!("{file}.pem")), key: self.dir.join(format!("{file}.key")) };
        std::fs::write(&issued.cert, cert.pem()).expect("write cert");
        std::fs::write(&issued.key, key.serialize_pem()).expect("write key");
        issued
    }
}

/// One CA for the whole test binary: the harness's in-process status calls and the CLI use the
/// process-wide client identity, which is set once.
fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("replog-e2e-tls-pki-{}", std::process::id()));
        let pki = Pki::new(&dir, "test-ca");
        let node = pki.issue("node", &["127.0.0.1", "localhost"], false);
        let cli = pki.issue("cli", &["cli.invalid"], false);
        // The CLI children inherit these; the nodes get flags, which win over them.
        std::env::set_var("REPLOG_TLS_CERT", &cli.cert);
        std::env::set_var("REPLOG_TLS_KEY", &cli.key);
        std::env::set_var("REPLOG_TLS_CA", &pki.ca_path);
        let tls = replog_runtime::tls::Tls::load(replog_runtime::tls::TlsFiles {
            cert: cli.cert.clone(),
            key: cli.key.clone(),
            ca: pki.ca_path.clone(),
        })
        .expect("client TLS");
        replog_runtime::tls::set_client_config(Arc::clone(&tls.configs().client));
        let _ = node;
        pki
    })
}

/// The `start` flags of a node of the test CA.
fn node_flags() -> Vec<String> {
    let pki = pki();
    vec![
        "--tls-cert".into(),
        pki.dir.join("node.pem").display().to_string(),
        "--tls-key".into(),
        pki.dir.join("node.key").display().to_string(),
        "--tls-ca".into(),
        pki.ca_path.display().to_string(),
    ]
}

fn tls_cluster(name: &str, size: usize) -> TestCluster {
    let cluster = TestCluster::start_with(name, size, |_| node_flags());
    assert!(
        cluster.wait_leader(Duration::from_secs(15)).is_some(),
        "no leader; log:\n{}",
        cluster.log_text(0)
    );
    cluster
}

/// Waits (bounded) for node `k`'s log to contain `text`.
fn wait_logged(cluster: &TestCluster, k: usize, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if cluster.log_text(k).contains(text) {
            return;
        }
        sleep(Duration::from_millis(50));
    }
    panic!("node log lacks {text:?}:\n{}", cluster.log_text(k));
}

/// The node still serves TLS clients: an append through the CLI commits.
fn assert_serves(cluster: &TestCluster, command: &str) {
    let (code, out, err) = cluster.cli(&["append", "-t", &cluster.address(0), "-c", command]);
    assert_eq!(code, 0, "append failed: {out} {err}");
}

/// A TLS client of our own (not the process-wide one): `cert` and `key` presented, the test
/// CA trusted.
fn connect_as(
    address: SocketAddr,
    issued: &Issued,
    ca: &Path,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(ca.expect("ca")).expect("root");
    }
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&issued.cert).expect("cert").map(|c| c.expect("cert")).collect();
    let key = PrivateKeyDer::from_pem_file(&issued.key).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .expect("client auth");
    let name = ServerName::IpAddress(address.ip().into());
    let session = rustls::ClientConnection::new(Arc::new(config), name).expect("session");
    let stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    rustls::StreamOwned::new(session, stream)
}

fn encoded(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode_with(&mut out, |out| codec::encode(frame, out));
    out
}

/// Sends `frame` and reads until the node closes: it must answer nothing.
fn send_expecting_close(stream: &mut impl ReadWrite, frame: &Frame) {
    let _ = stream.write_all(&encoded(frame)).and_then(|()| stream.flush());
    let mut buffer = [0u8; 4096];
    // The stream's read timeout bounds the wait.
    match stream.read(&mut buffer) {
        Ok(0) => {}
        Ok(_) => panic!("the node answered a refused caller"),
        Err(error)
            if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
        {
            panic!("the node kept a refused connection open")
        }
        Err(_) => {} // reset, or the TLS alert that refused us
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[test]
fn a_tls_cluster_appends_and_queries_with_the_cli_through_the_variables() {
    let _serial = replog_tests::serial();
    let cluster = tls_cluster("tls-cluster", 3);
    for k in 0..3 {
        let (code, out, err) =
            cluster.cli(&["append", "-t", &cluster.address(k), "-c", &format!("over-tls-{k}")]);
        assert_eq!(code, 0, "append at node{}: {out} {err}", k + 1);
    }
    let log = cluster.wait_converged(Duration::from_secs(10));
    let commands: Vec<&str> = log.iter().map(|(_, command)| command.as_str()).collect();
    assert_eq!(commands, ["over-tls-0", "over-tls-1", "over-tls-2"]);
    let (code, out, err) = cluster.cli(&["query", "-t", &cluster.address(1), "--linearizable"]);
    assert_eq!(code, 0, "query: {err}");
    assert!(out.contains("over-tls-2"), "query output: {out}");
}

#[test]
fn a_client_certificate_from_another_ca_is_refused() {
    let _serial = replog_tests::serial();
    let cluster = tls_cluster("tls-other-ca", 1);
    let other = Pki::new(&pki().dir.join("other"), "other-ca");
    let stranger = other.issue("stranger", &["127.0.0.1"], false);
    let mut stream = connect_as(cluster.nodes[0].address, &stranger, &pki().ca_path);
    send_expecting_close(&mut stream, &Frame::Status);
    wait_logged(&cluster, 0, "TLS: invalid peer certificate");
    assert_serves(&cluster, "after-other-ca");
}

#[test]
fn an_expired_client_certificate_is_refused() {
    let _serial = replog_tests::serial();
    let cluster = tls_cluster("tls-expired", 1);
    let expired = pki().issue("expired", &["127.0.0.1"], true);
    let mut stream = connect_as(cluster.nodes[0].address, &expired, &pki().ca_path);
    send_expecting_close(&mut stream, &Frame::Status);
    wait_logged(&cluster, 0, "TLS: invalid peer certificate: certificate expired");
    assert_serves(&cluster, "after-expired");
}

#[test]
fn a_peer_hello_claiming_an_address_its_certificate_does_not_name_is_refused() {
    let _serial = replog_tests::serial();
    let cluster = tls_cluster("tls-impostor", 1);
    let elsewhere = pki().issue("elsewhere", &["127.0.0.9", "elsewhere"], false);
    let mut stream = connect_as(cluster.nodes[0].address, &elsewhere, &pki().ca_path);
    let hello = Frame::Hello {
        address: "127.0.0.1:1".into(),
        name: "impostor".into(),
        id: NodeId(0xbad),
        bootstrap: None,
        cluster: Vec::new(),
    };
    send_expecting_close(&mut stream, &hello);
    wait_logged(
        &cluster,
        0,
        "hello from impostor at 127.0.0.1:1: its certificate does not name that address",
    );
    assert_serves(&cluster, "after-impostor");
}

/// A certificate proves an address only by an IP SAN: a DNS SAN equal to the name a hello
/// gives proves nothing (the caller picks the name). And a hello may not take the id of a node
/// known at another address, even with a certificate that names the address it claims.
#[test]
fn a_hello_naming_itself_by_a_dns_san_or_taking_a_members_id_is_refused() {
    let _serial = replog_tests::serial();
    let cluster = tls_cluster("tls-identity", 3);
    let report = replog_runtime::client::status(&cluster.address(1), Duration::from_secs(5)).expect("status");
    let id = NodeId(u64::from_str_radix(&report.id, 16).expect("a hex id"));

    let named = pki().issue("dns-only", &["mallory"], false);
    let mut stream = connect_as(cluster.nodes[0].address, &named, &pki().ca_path);
    let hello = Frame::Hello {
        address: "10.1.2.3:9999".into(),
        name: "mallory".into(),
        id: NodeId(0xbad2),
        bootstrap: None,
        cluster: Vec::new(),
    };
    send_expecting_close(&mut stream, &hello);
    wait_logged(
        &cluster,
        0,
        "hello from mallory at 10.1.2.3:9999: its certificate does not name that address",
    );

    let node = Issued { cert: pki().dir.join("node.pem"), key: pki().dir.join("node.key") };
    let mut stream = connect_as(cluster.nodes[0].address, &node, &pki().ca_path);
    let hello = Frame::Hello {
        address: "127.0.0.1:1".into(),
        name: "node2".into(),
        id,
        bootstrap: None,
        cluster: Vec::new(),
    };
    send_expecting_close(&mut stream, &hello);
    wait_logged(&cluster, 0, &format!("claims the id {} of the node at {}", report.id, cluster.address(1)));
    let log = cluster.log_text(0);
    assert!(!log.contains("peer mallory") && !log.contains("127.0.0.1:1, id"), "{log}");
    assert_serves(&cluster, "after-identity");
}

/// Connections that never say who they are (nothing sent, or a TLS handshake begun and left)
/// are closed after 10 s, so they cannot hold the node's connection slots for good.
#[test]
fn silent_connections_and_unfinished_handshakes_are_closed() {
    let _serial = replog_tests::serial();
    let cluster = tls_cluster("tls-silent", 1);
    let address = cluster.nodes[0].address;
    let silent = TcpStream::connect(address).expect("connect");
    let mut started = TcpStream::connect(address).expect("connect");
    // A handshake record's header promising 512 bytes, and nothing more.
    started.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).expect("write");
    let begun = Instant::now();
    for mut stream in [silent, started] {
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let mut buffer = [0u8; 64];
        let closed = matches!(stream.read(&mut buffer), Ok(0) | Err(_));
        assert!(closed && begun.elapsed() < Duration::from_secs(19), "the node kept a silent connection");
    }
    assert!(begun.elapsed() >= Duration::from_secs(9), "closed before the time allowed");
    let log = cluster.log_text(0);
    assert_eq!(log.matches("no first frame: silent for 10 s").count(), 2, "{log}");
    assert_serves(&cluster, "after-silence");
}

#[test]
fn a_plain_text_client_is_refused() {
    let _serial = replog_tests::serial();
    let cluster = tls_cluster("tls-plain", 1);
    let mut stream = TcpStream::connect(cluster.nodes[0].address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    send_expecting_close(&mut stream, &Frame::Status);
    wait_logged(&cluster, 0, "plain-text connection to a TLS node");
    assert_serves(&cluster, "after-plain");
}

#[test]
fn garbage_in_the_handshake_is_refused() {
    let _serial = replog_tests::serial();
    let cluster = tls_cluster("tls-garbage", 1);
    let mut stream = TcpStream::connect(cluster.nodes[0].address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    // A handshake record header, then bytes that are no ClientHello.
    let mut garbage = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    garbage.extend((0..64u8).map(|k| k.wrapping_mul(37)));
    stream.write_all(&garbage).expect("write");
    let mut buffer = [0u8; 4096];
    while matches!(stream.read(&mut buffer), Ok(n) if n > 0) {}
    wait_logged(&cluster, 0, "TLS: ");
    assert_serves(&cluster, "after-garbage");
}

#[test]
fn an_expired_node_certificate_stops_the_start_naming_the_file_and_dates() {
    let _serial = replog_tests::serial();
    let expired = pki().issue("expired-node", &["127.0.0.1"], true);
    let port = replog_tests::free_ports(1)[0];
    let dir = pki().dir.join("expired-start");
    let (code, _out, err) = replog_tests::cli_with_stdin(
        &[
            "start",
            "-i",
            "n1",
            "-a",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            &dir.display().to_string(),
            "--tls-cert",
            &expired.cert.display().to_string(),
            "--tls-key",
            &expired.key.display().to_string(),
        ],
        "",
    );
    assert_ne!(code, 0, "a node with an expired certificate started");
    assert!(err.contains("expired-node.pem"), "error names no file: {err}");
    assert!(err.contains("expired") && err.contains("2000"), "error names no dates: {err}");
}

#[test]
fn sighup_rereads_the_certificates_and_keeps_the_old_ones_if_the_new_are_expired() {
    let _serial = replog_tests::serial();
    let pki = pki();
    let first = pki.issue("reload-node", &["127.0.0.1"], false);
    let flags = vec![
        "--tls-cert".to_string(),
        first.cert.display().to_string(),
        "--tls-key".into(),
        first.key.display().to_string(),
        "--tls-ca".into(),
        pki.ca_path.display().to_string(),
    ];
    let cluster = TestCluster::start_with("tls-reload", 1, |_| flags.clone());
    assert!(cluster.wait_leader(Duration::from_secs(15)).is_some(), "no leader:\n{}", cluster.log_text(0));
    let pid = cluster.nodes[0].pid().expect("running").to_string();
    let hangup = || {
        let status = std::process::Command::new("kill").args(["-HUP", &pid]).status().expect("kill");
        assert!(status.success());
    };

    // An expired replacement is refused; the node keeps its certificate and serves.
    let expired = pki.issue("reload-expired", &["127.0.0.1"], true);
    std::fs::copy(&expired.cert, &first.cert).expect("copy");
    std::fs::copy(&expired.key, &first.key).expect("copy");
    hangup();
    wait_logged(&cluster, 0, "SIGHUP: keeping the current TLS certificates");
    wait_logged(&cluster, 0, "reload-node.pem (CN=reload-expired) is expired");
    assert_serves(&cluster, "after-expired-reload");

    // A valid replacement is taken: new connections see the new certificate.
    let renewed = pki.issue("reload-renewed", &["127.0.0.1"], false);
    std::fs::copy(&renewed.cert, &first.cert).expect("copy");
    std::fs::copy(&renewed.key, &first.key).expect("copy");
    hangup();
    wait_logged(&cluster, 0, "SIGHUP: TLS certificates re-read");
    let client = pki.issue("reload-client", &["client.invalid"], false);
    let mut stream = connect_as(cluster.nodes[0].address, &client, &pki.ca_path);
    stream.write_all(&encoded(&Frame::Status)).expect("status request");
    let mut buffer = [0u8; 64];
    assert!(stream.read(&mut buffer).expect("status answer") > 0);
    let presented = stream.conn.peer_certificates().expect("server certificate")[0].clone();
    let renewed_der = CertificateDer::from_pem_file(&renewed.cert).expect("renewed");
    assert_eq!(presented, renewed_der, "the node still presents its old certificate");
    assert_serves(&cluster, "after-reload");
}

#[test]
fn a_peer_node_with_a_certificate_from_another_ca_is_refused() {
    let _serial = replog_tests::serial();
    let cluster = tls_cluster("tls-rogue-peer", 1);
    let other = Pki::new(&pki().dir.join("rogue"), "rogue-ca");
    let rogue = other.issue("rogue-node", &["127.0.0.1"], false);
    let port = replog_tests::free_ports(1)[0];
    let log = cluster.dir.join("rogue.log");
    let mut child = std::process::Command::new(replog_tests::replog_binary())
        .args(["start", "-i", "rogue", "-a", &format!("127.0.0.1:{port}"), "-p", &cluster.address(0)])
        .arg("--data-dir")
        .arg(cluster.dir.join("rogue-data"))
        .arg("--tls-cert")
        .arg(&rogue.cert)
        .arg("--tls-key")
        .arg(&rogue.key)
        .arg("--tls-ca")
        .arg(&other.ca_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("rogue log"))
        .spawn()
        .expect("spawning the rogue node");
    wait_logged(&cluster, 0, "TLS: ");
    // The rogue keeps dialling, backing off to once a second: a refused handshake is no
    // working link (it used to reset the backoff to 20 ms: about 50 refusals a second).
    sleep(Duration::from_secs(3));
    let refusals = cluster.log_text(0).matches("TLS: ").count();
    let _ = child.kill();
    let _ = child.wait();
    assert!(refusals <= 12, "{refusals} refusals in about 3 s: the rogue does not back off");
    let rogue_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(rogue_log.contains("cannot link to peer"), "the rogue does not say why:\n{rogue_log}");
    assert!(!rogue_log.contains("connected to peer"), "a refused handshake counted as a link:\n{rogue_log}");
    assert!(
        !cluster.log_text(0).contains("peer rogue"),
        "the rogue was taken as a peer:\n{}",
        cluster.log_text(0)
    );
    assert_serves(&cluster, "after-rogue-peer");
}

#[test]
fn cluster_tls_makes_certificates_starts_tls_nodes_and_prints_the_variables() {
    let _serial = replog_tests::serial();
    let dir = std::env::temp_dir().join(format!("replog-e2e-cluster-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let base = (0..50)
        .map(|i| 21_000 + ((std::process::id() as u16 % 500) * 60) + i * 7)
        .find(|&base| (0..3).all(|k| std::net::TcpListener::bind(("127.0.0.1", base + k)).is_ok()))
        .expect("three free consecutive ports");
    let mut child = std::process::Command::new(replog_tests::replog_binary())
        .args(["cluster", "--tls", "--nodes", "3", "--base-port", &base.to_string(), "--data-dir"])
        .arg(dir.join("data"))
        .env_remove("REPLOG_TLS_CERT")
        .env_remove("REPLOG_TLS_KEY")
        .env_remove("REPLOG_TLS_CA")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawning replog cluster --tls");
    let tls = dir.join("data").join("tls");
    let target = format!("127.0.0.1:{base}");
    let replog = |tls_flags: bool, args: &[&str]| {
        let mut command = std::process::Command::new(replog_tests::replog_binary());
        command
            .args(args)
            .env_remove("REPLOG_TLS_CERT")
            .env_remove("REPLOG_TLS_KEY")
            .env_remove("REPLOG_TLS_CA");
        if tls_flags {
            command.arg("--tls-cert").arg(tls.join("cli.pem")).arg("--tls-key").arg(tls.join("cli.key"));
            command.arg("--tls-ca").arg(tls.join("ca.pem"));
        }
        command.output().expect("running replog")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tls.join("cli.key").exists() && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
    }
    let appended = replog(true, &["append", "-t", &target, "-c", "hello-tls-cluster", "--timeout", "10"]);
    let plain = replog(false, &["status", "-t", &target]);
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut out = String::new();
    child.stdout.take().expect("stdout").read_to_string(&mut out).expect("read stdout");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(appended.status.success(), "append over TLS: {}", String::from_utf8_lossy(&appended.stderr));
    assert!(!plain.status.success(), "a plain-text status was answered by a TLS cluster");
    for variable in ["REPLOG_TLS_CERT", "REPLOG_TLS_KEY", "REPLOG_TLS_CA"] {
        assert!(out.contains(&format!("export {variable}=")), "no export of {variable}:\n{out}");
    }
}

/// What one fuzzed connection ended in.
#[derive(Debug, PartialEq, Eq)]
enum FuzzOutcome {
    /// The node answered the `Status` sent after the fuzzed frames: it took them as input.
    Answered,
    /// The node closed the connection (a frame or TLS record it refused).
    Closed,
}

/// Valid client frames whose encodings the fuzzer mutates. A membership change is left out:
/// it is an operator's authorised request, and a valid one would change the cluster under test.
fn fuzz_samples(peer: &str) -> Vec<Vec<u8>> {
    let frames = [
        Frame::Status,
        Frame::Health,
        Frame::Append { request: 7, command: b"fuzz-append".to_vec() },
        Frame::SessionAppend {
            request: 8,
            client: 0xf00d,
            seq: 1,
            since: 0,
            expect_last: Some(3),
            commands: vec![b"a".to_vec(), b"bc".to_vec()],
        },
        Frame::Query { from: 1, max: 10, linearizable: true },
        Frame::ReadCommands { from_id: 1, max: 5, linearizable: false },
        Frame::TransferLeader { to: "127.0.0.1:1".into() },
        Frame::Hello {
            address: peer.into(),
            name: "node2".into(),
            id: NodeId(2),
            bootstrap: None,
            cluster: Vec::new(),
        },
    ];
    frames
        .iter()
        .map(|frame| {
            let mut out = Vec::new();
            codec::encode(frame, &mut out);
            out
        })
        .collect()
}

/// One fuzzed payload: a valid sample, a sample with bytes flipped, cut or added, a known frame
/// kind with random bytes after it, or any kind byte at all. The frame around it is valid, so
/// every payload reaches the decoder.
fn fuzz_payload(rng: &mut rand_chacha::ChaCha8Rng, samples: &[Vec<u8>]) -> Vec<u8> {
    use rand::RngExt;
    const KNOWN_KINDS: [u8; 20] =
        [1, 2, 10, 11, 12, 13, 14, 16, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29];
    let random_bytes = |rng: &mut rand_chacha::ChaCha8Rng, max: usize| -> Vec<u8> {
        let len = rng.random_range(0..=max);
        (0..len).map(|_| rng.random()).collect()
    };
    match rng.random_range(0..10) {
        0 | 1 => samples[rng.random_range(0..samples.len())].clone(),
        2..=5 => {
            let mut bytes = samples[rng.random_range(0..samples.len())].clone();
            for _ in 0..rng.random_range(1..=4) {
                match rng.random_range(0..3) {
                    0 if !bytes.is_empty() => {
                        let at = rng.random_range(0..bytes.len());
                        bytes[at] = rng.random();
                    }
                    1 => bytes.truncate(rng.random_range(0..=bytes.len())),
                    _ => bytes.extend(random_bytes(rng, 16)),
                }
            }
            bytes
        }
        6..=8 => {
            let mut bytes = vec![KNOWN_KINDS[rng.random_range(0..KNOWN_KINDS.len())]];
            bytes.extend(random_bytes(rng, 64));
            bytes
        }
        _ => random_bytes(rng, 48),
    }
}

/// Sends `payloads` as frames, then a `Status`, over an established TLS connection (or, with
/// `raw_record`, a forged TLS record straight onto the socket after the handshake), and reads
/// until the node answers the `Status` or closes.
fn fuzz_connection(address: SocketAddr, payloads: &[Vec<u8>], raw_record: Option<&[u8]>) -> FuzzOutcome {
    let pki = pki();
    let client = Issued { cert: pki.dir.join("cli.pem"), key: pki.dir.join("cli.key") };
    let mut stream = connect_as(address, &client, &pki.ca_path);
    let mut wire = Vec::new();
    for payload in payloads {
        frame::encode(payload, &mut wire);
    }
    wire.extend(encoded(&Frame::Status));
    let sent = match raw_record {
        // The handshake completes on the first write; the forged record follows it.
        Some(record) => stream
            .write_all(&encoded(&Frame::Health))
            .and_then(|()| stream.flush())
            .and_then(|()| stream.sock.write_all(record))
            .and_then(|()| stream.write_all(&wire))
            .and_then(|()| stream.flush()),
        None => stream.write_all(&wire).and_then(|()| stream.flush()),
    };
    if sent.is_err() {
        return FuzzOutcome::Closed;
    }
    let mut inbox = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return FuzzOutcome::Closed,
            Ok(n) => inbox.extend_from_slice(&buffer[..n]),
            Err(error)
                if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                panic!("the node neither answered nor closed after {payloads:02x?}")
            }
            Err(_) => return FuzzOutcome::Closed,
        }
        while let Some((range, len)) = frame::decode(&inbox).expect("the node sent a bad frame") {
            let answer = codec::decode(&inbox[range]).expect("the node sent an undecodable frame");
            inbox.drain(..len);
            if matches!(answer, Frame::StatusResult(_)) {
                return FuzzOutcome::Answered;
            }
        }
    }
}

/// The frame decoder behind TLS: 1,000 connections of a client with a valid certificate, each
/// sending one or two fuzzed frames (valid framing, mutated or random payloads) or a forged
/// TLS record, then a `Status`. Each is either answered or closed, the node never stalls or
/// panics, and it keeps committing. The seed is fixed, so a failure repeats.
#[test]
fn fuzzed_frames_over_tls_are_answered_or_refused_and_the_node_keeps_serving() {
    use rand::RngExt;
    use rand_chacha::rand_core::SeedableRng;
    let _serial = replog_tests::serial();
    let cluster = tls_cluster("tls-fuzz", 3);
    let target = cluster.nodes[0].address;
    let samples = fuzz_samples(&cluster.address(1));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x7115_f022);
    let (mut answered, mut closed) = (0, 0);
    for case in 0..1000 {
        let payloads: Vec<Vec<u8>> =
            (0..rng.random_range(1..=2)).map(|_| fuzz_payload(&mut rng, &samples)).collect();
        // One case in twelve forges an application-data record (type 23, TLS 1.2 version).
        let record: Option<Vec<u8>> = (case % 12 == 11).then(|| {
            let len = rng.random_range(1..=64u16);
            let mut record = vec![23, 3, 3];
            record.extend(len.to_be_bytes());
            record.extend((0..len).map(|_| rng.random::<u8>()));
            record
        });
        match fuzz_connection(target, &payloads, record.as_deref()) {
            FuzzOutcome::Answered => answered += 1,
            FuzzOutcome::Closed => closed += 1,
        }
    }
    eprintln!("fuzz over TLS: {answered} connections answered, {closed} closed");
    // Both ways through the decoder were taken: input it accepted and input it refused.
    assert!(answered >= 50 && closed >= 200, "answered {answered}, closed {closed}");
    for node in &cluster.nodes {
        assert_eq!(fuzz_connection(node.address, &[], None), FuzzOutcome::Answered, "{} is gone", node.name);
    }
    let log = cluster.log_text(0);
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("TLS: "), "no forged record was refused:\n{log}");
    assert_serves(&cluster, "after-fuzz");
}

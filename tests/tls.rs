//! TLS on the client port: the real binary with certificates made here (rcgen, in a tempdir).
//! The client crate, RESP over TLS, redis-cli, kvsh and kvbench; wrong CAs, plaintext on a
//! --tls-only server, client certificates, startup errors, and a stalled handshake.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use ringkv_client::{Client, ClientConfig, ClientError, TlsConfig, TlsOptions, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHILD_LIMIT: Duration = Duration::from_secs(60);
const DEADLINE: Duration = Duration::from_secs(10);

/// Two CAs and certificates signed by them, as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        for ca_name in ["ca", "other-ca"] {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name
                .push(DnType::CommonName, format!("ringkv test {ca_name}"));
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
            write(&format!("{ca_name}.pem"), ca.pem());
            let leaves = [
                ("server", ExtendedKeyUsagePurpose::ServerAuth),
                ("client", ExtendedKeyUsagePurpose::ClientAuth),
            ];
            for (leaf, usage) in leaves {
                let key = KeyPair::generate().unwrap();
                let mut p =
                    CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                        .unwrap();
                p.distinguished_name
                    .push(DnType::CommonName, format!("ringkv test {leaf}"));
                p.extended_key_usages = vec![usage];
                let cert = p.signed_by(&key, &ca).unwrap();
                let prefix = if ca_name == "ca" { "" } else { "other-" };
                write(&format!("{prefix}{leaf}.pem"), cert.pem());
                write(&format!("{prefix}{leaf}.key"), key.serialize_pem());
            }
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }

    /// Server flags: its certificate and key (signed by `ca`), plus `extra`.
    fn server(&self, extra: &[&str]) -> Server {
        let (cert, key) = (self.p("server.pem"), self.p("server.key"));
        let mut args = vec!["--tls-cert", &cert, "--tls-key", &key];
        args.extend_from_slice(extra);
        Server::start(&args)
    }

    fn client_tls(&self, ca: &str, client_cert: Option<&str>) -> TlsConfig {
        TlsConfig::from_options(&TlsOptions {
            ca_file: self.path(ca),
            cert_file: client_cert.map(|c| self.path(&format!("{c}.pem"))),
            key_file: client_cert.map(|c| self.path(&format!("{c}.key"))),
            server_name: None,
        })
        .expect("client TLS config")
    }
}

fn tls_config(tls: TlsConfig) -> ClientConfig {
    ClientConfig {
        tls: Some(tls),
        ..ClientConfig::default()
    }
}

async fn put_get(client: &Client) {
    client.put("tls-key", "tls-value").await.expect("put");
    let got = client.get("tls-key").await.expect("get").expect("a value");
    assert_eq!(got.value().map(|b| b.to_vec()), Some(b"tls-value".to_vec()));
}

/// The text of a TLS error from the client crate, or a panic naming what came instead.
fn tls_error<T: std::fmt::Debug>(r: Result<T, ClientError>) -> String {
    match r {
        Err(ClientError::Tls(msg)) => msg,
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

fn info_stat(text: &str, field: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO:\n{text}"))
}

async fn tls_handshake_failures(client: &Client) -> u64 {
    match client.command(&["INFO", "stats"]).await.expect("INFO") {
        Value::Bulk(b) => info_stat(&String::from_utf8_lossy(&b), "tls_handshake_failures"),
        other => panic!("INFO replied {other:?}"),
    }
}

#[tokio::test]
async fn client_crate_with_the_right_ca() {
    let pki = Pki::new();
    let server = pki.server(&["--tls-only"]);
    let client = Client::connect(server.addr, tls_config(pki.client_tls("ca.pem", None)))
        .await
        .expect("TLS connect");
    put_get(&client).await;
    // A reply far larger than one TLS record (16 KiB) and than one socket write.
    let big = "x".repeat(3 << 20);
    client.put("big", big.as_str()).await.expect("put big");
    let got = client.get("big").await.expect("get big").expect("a value");
    assert_eq!(got.value().map(|b| b.len()), Some(big.len()));
}

#[tokio::test]
async fn resp_over_tls_pipelined() {
    let pki = Pki::new();
    let server = pki.server(&["--tls-only"]);
    let tls = pki.client_tls("ca.pem", None);
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut s = tls.connect(tcp).await.expect("TLS handshake");
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let value = "v".repeat(100_000);
    let mut req = format!(
        "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n{value}\r\n",
        value.len()
    );
    for _ in 0..50 {
        req.push_str("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }
    req.push_str("*1\r\n$4\r\nPING\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.flush().await.unwrap();
    let one_get = format!("${}\r\n{value}\r\n", value.len());
    let want = format!("+OK\r\n{}+PONG\r\n", one_get.repeat(50));
    let mut got = vec![0u8; want.len()];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut got))
        .await
        .expect("replies within the deadline")
        .expect("read replies");
    assert!(got == want.as_bytes(), "RESP replies over TLS differ");
}

/// A reply larger than the socket buffers, to a client that reads slowly (small receive
/// buffer, small reads): the server's TLS writes block again and again, and the whole reply
/// must still arrive intact. (The server also flushes the TLS stream after each batch, as
/// tokio-rustls requires; whether the last write leaves records behind depends on timing, so
/// this test may not catch a missing flush every time.)
#[tokio::test]
async fn large_reply_to_a_slow_reader_over_tls() {
    let pki = Pki::new();
    let server = pki.server(&["--tls-only"]);
    let tls = pki.client_tls("ca.pem", None);
    let client = Client::connect(server.addr, tls_config(tls.clone()))
        .await
        .expect("TLS connect");
    let value = "z".repeat(8 << 20);
    client.put("big", value.as_str()).await.expect("put");
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(server.addr).await.unwrap();
    let mut s = tls.connect(tcp).await.expect("TLS handshake");
    s.write_all(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n")
        .await
        .unwrap();
    s.flush().await.unwrap();
    let want = format!("${}\r\n{value}\r\n", value.len());
    let mut got = Vec::with_capacity(want.len());
    let mut chunk = [0u8; 1024];
    let read_all = async {
        while got.len() < want.len() {
            let n = s.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed after {} of {} bytes", got.len(), want.len());
            got.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read_all)
        .await
        .expect("the whole reply within the deadline");
    assert!(got == want.as_bytes());
}

#[tokio::test]
async fn wrong_ca_is_refused_by_the_client() {
    let pki = Pki::new();
    let server = pki.server(&["--tls-only"]);
    let err = tls_error(
        Client::connect(
            server.addr,
            tls_config(pki.client_tls("other-ca.pem", None)),
        )
        .await,
    );
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(err.contains("other-ca.pem"), "names the CA file: {err}");
}

#[tokio::test]
async fn certificate_for_another_name_is_refused() {
    let pki = Pki::new();
    let server = pki.server(&["--tls-only"]);
    let tls = TlsConfig::from_options(&TlsOptions {
        ca_file: pki.path("ca.pem"),
        server_name: Some("db.example.com".into()),
        ..TlsOptions::default()
    })
    .unwrap();
    let err = tls_error(Client::connect(server.addr, tls_config(tls)).await);
    assert!(err.contains("invalid peer certificate"), "{err}");
    // "localhost" is in the certificate: accepted.
    let tls = TlsConfig::from_options(&TlsOptions {
        ca_file: pki.path("ca.pem"),
        server_name: Some("localhost".into()),
        ..TlsOptions::default()
    })
    .unwrap();
    put_get(
        &Client::connect(server.addr, tls_config(tls))
            .await
            .expect("connect"),
    )
    .await;
}

/// TLS 1.2 clients are served too (and TLS 1.3, which every other test negotiates).
#[tokio::test]
async fn tls_1_2_client() {
    use rustls_pki_types::pem::PemObject;
    let pki = Pki::new();
    let server = pki.server(&["--tls-only"]);
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = connector
        .connect(name, tcp)
        .await
        .expect("TLS 1.2 handshake");
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    s.write_all(b"PING\r\n").await.unwrap();
    s.flush().await.unwrap();
    let mut got = [0u8; 7];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut got))
        .await
        .expect("reply within the deadline")
        .unwrap();
    assert_eq!(&got, b"+PONG\r\n");
}

#[tokio::test]
async fn plaintext_on_a_tls_only_server_is_refused() {
    let pki = Pki::new();
    let server = pki.server(&["--tls-only"]);
    // RESP: an error reply in RESP, then the server closes.
    let mut s = server.tcp();
    s.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let reply = String::from_utf8_lossy(&read_n(&mut s, 1 << 16)).into_owned();
    assert!(
        reply.starts_with("-ERR TLS required on this port") && reply.ends_with("\r\n"),
        "{reply:?}"
    );
    assert!(closed_by_peer(&mut s));
    // Binary protocol, byte by byte (protocol.md §1.1): a Fatal frame, request id 0, opcode 0.
    // The HELLO is protocol.md §2.5's without password and name.
    let mut s = server.tcp();
    let hello = [
        0, 0, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    s.write_all(&hello).unwrap();
    let frame = read_n(&mut s, 1 << 16);
    assert!(frame.len() > 21, "{frame:?}");
    let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    assert_eq!(len + 4, frame.len(), "one frame: {frame:?}");
    assert_eq!(&frame[4..12], &[0; 8], "request id 0");
    assert_eq!(
        &frame[12..16],
        &[0x00, 0x01, 0x02, 0x00],
        "opcode 0, reply, Fatal"
    );
    // Error value: tag 0x02, u32 length, text.
    assert_eq!(frame[16], 0x02);
    let text = String::from_utf8_lossy(&frame[21..]);
    assert!(text.starts_with("ERR TLS required on this port"), "{text}");
    // The client crate reports the same text.
    let err = match Client::connect(server.addr, ClientConfig::default()).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a plaintext binary client was served by a --tls-only server"),
    };
    assert!(err.contains("TLS required on this port"), "{err}");
    // Both were counted.
    let client = Client::connect(server.addr, tls_config(pki.client_tls("ca.pem", None)))
        .await
        .expect("TLS connect");
    assert_eq!(tls_handshake_failures(&client).await, 3);
    // CONFIG RESETSTAT zeroes it with the other INFO stats.
    client
        .command(&["CONFIG", "RESETSTAT"])
        .await
        .expect("RESETSTAT");
    assert_eq!(tls_handshake_failures(&client).await, 0);
}

#[tokio::test]
async fn plaintext_and_tls_share_the_port_without_tls_only() {
    let pki = Pki::new();
    let server = pki.server(&[]);
    assert_serving(&server);
    let plain = Client::connect(server.addr, ClientConfig::default())
        .await
        .expect("plaintext binary connect");
    put_get(&plain).await;
    let tls = Client::connect(server.addr, tls_config(pki.client_tls("ca.pem", None)))
        .await
        .expect("TLS connect");
    put_get(&tls).await;
    assert_eq!(tls_handshake_failures(&plain).await, 0);
}

#[tokio::test]
async fn client_certificates_required() {
    let pki = Pki::new();
    let ca = pki.p("ca.pem");
    // --tls-ca alone means --tls-auth-clients yes, as in Redis.
    let server = pki.server(&["--tls-only", "--tls-ca", &ca]);
    let err =
        tls_error(Client::connect(server.addr, tls_config(pki.client_tls("ca.pem", None))).await);
    assert!(err.contains("requires a client certificate"), "{err}");
    let err = tls_error(
        Client::connect(
            server.addr,
            tls_config(pki.client_tls("ca.pem", Some("other-client"))),
        )
        .await,
    );
    assert!(err.contains("refused the TLS connection"), "{err}");
    let client = Client::connect(
        server.addr,
        tls_config(pki.client_tls("ca.pem", Some("client"))),
    )
    .await
    .expect("a client certificate signed by --tls-ca is accepted");
    put_get(&client).await;
    assert_eq!(tls_handshake_failures(&client).await, 2);
}

#[tokio::test]
async fn client_certificates_optional() {
    let pki = Pki::new();
    let ca = pki.p("ca.pem");
    let server = pki.server(&[
        "--tls-only",
        "--tls-ca",
        &ca,
        "--tls-auth-clients",
        "optional",
    ]);
    let without = Client::connect(server.addr, tls_config(pki.client_tls("ca.pem", None)))
        .await
        .expect("optional: no certificate is fine");
    put_get(&without).await;
    let with = Client::connect(
        server.addr,
        tls_config(pki.client_tls("ca.pem", Some("client"))),
    )
    .await
    .expect("optional: a good certificate is fine");
    put_get(&with).await;
    let err = tls_error(
        Client::connect(
            server.addr,
            tls_config(pki.client_tls("ca.pem", Some("other-client"))),
        )
        .await,
    );
    assert!(err.contains("refused the TLS connection"), "{err}");
}

#[tokio::test]
async fn client_certificates_not_asked_with_auth_no() {
    let pki = Pki::new();
    let ca = pki.p("ca.pem");
    let server = pki.server(&["--tls-only", "--tls-ca", &ca, "--tls-auth-clients", "no"]);
    let client = Client::connect(server.addr, tls_config(pki.client_tls("ca.pem", None)))
        .await
        .expect("no client certificate needed");
    put_get(&client).await;
}

/// Fails (never skips) when redis-cli is missing: .ci/run installs redis-tools.
fn redis_cli(args: &[&str]) -> Ran {
    let mut cmd = Command::new("redis-cli");
    cmd.args(args);
    run_bounded(&mut cmd, CHILD_LIMIT)
}

#[test]
fn redis_cli_over_tls() {
    let pki = Pki::new();
    let server = pki.server(&["--tls-only"]);
    let port = server.port().to_string();
    let ca = pki.p("ca.pem");
    let tls = ["--tls", "--cacert", &ca, "-h", "127.0.0.1", "-p", &port];
    let ran = redis_cli(&[&tls[..], &["PING"]].concat());
    assert!(ran.status.success(), "{ran:?}");
    assert_eq!(ran.stdout.trim(), "PONG", "{ran:?}");
    let ran = redis_cli(&[&tls[..], &["SET", "cli", "hello"]].concat());
    assert_eq!(ran.stdout.trim(), "OK", "{ran:?}");
    let ran = redis_cli(&[&tls[..], &["GET", "cli"]].concat());
    assert_eq!(ran.stdout.trim(), "hello", "{ran:?}");
    // Without --tls, redis-cli gets the refusal as an error reply.
    let ran = redis_cli(&["-h", "127.0.0.1", "-p", &port, "PING"]);
    assert!(
        ran.stdout.contains("TLS required on this port")
            || ran.stderr.contains("TLS required on this port"),
        "{ran:?}"
    );
}

#[test]
fn redis_cli_with_a_client_certificate() {
    let pki = Pki::new();
    let ca = pki.p("ca.pem");
    let server = pki.server(&["--tls-only", "--tls-ca", &ca]);
    let port = server.port().to_string();
    let (cert, key) = (pki.p("client.pem"), pki.p("client.key"));
    let base = ["--tls", "--cacert", &ca, "-h", "127.0.0.1", "-p", &port];
    let ran = redis_cli(&[&base[..], &["--cert", &cert, "--key", &key, "PING"]].concat());
    assert_eq!(ran.stdout.trim(), "PONG", "{ran:?}");
    let ran = redis_cli(&[&base[..], &["PING"]].concat());
    assert_ne!(
        ran.stdout.trim(),
        "PONG",
        "served without a client certificate: {ran:?}"
    );
}

fn kvsh(args: &[&str]) -> Ran {
    let mut cmd = Command::new(kvsh_binary());
    cmd.args(args).env_remove("RINGKV_PASSWORD");
    run_bounded(&mut cmd, CHILD_LIMIT)
}

#[test]
fn kvsh_over_tls() {
    let pki = Pki::new();
    let ca = pki.p("ca.pem");
    let server = pki.server(&["--tls-only", "--tls-ca", &ca]);
    let port = server.port().to_string();
    let (cert, key) = (pki.p("client.pem"), pki.p("client.key"));
    let base = ["--tls", "--cacert", &ca, "-p", &port];
    let with_cert = [&base[..], &["--cert", &cert, "--key", &key]].concat();
    let ran = kvsh(&[&with_cert[..], &["SET", "sh", "over-tls"]].concat());
    assert_eq!(
        (ran.status.code(), ran.stdout.trim()),
        (Some(0), "OK"),
        "{ran:?}"
    );
    let ran = kvsh(&[&with_cert[..], &["get", "sh"]].concat());
    assert_eq!(
        (ran.status.code(), ran.stdout.trim()),
        (Some(0), "over-tls"),
        "{ran:?}"
    );
    // No client certificate: refused, exit 2 (could not connect), and said why.
    let ran = kvsh(&[&base[..], &["PING"]].concat());
    assert_eq!(ran.status.code(), Some(2), "{ran:?}");
    assert!(
        ran.stderr.contains("requires a client certificate"),
        "{ran:?}"
    );
    // The wrong CA: refused by kvsh, naming the file.
    let other = pki.p("other-ca.pem");
    let ran = kvsh(&["--tls", "--cacert", &other, "-p", &port, "PING"]);
    assert_eq!(ran.status.code(), Some(2), "{ran:?}");
    assert!(ran.stderr.contains("invalid peer certificate"), "{ran:?}");
    assert!(ran.stderr.contains("other-ca.pem"), "{ran:?}");
    // --tls without --cacert is a usage error.
    let ran = kvsh(&["--tls", "-p", &port, "PING"]);
    assert_ne!(ran.status.code(), Some(0), "{ran:?}");
    assert!(ran.stderr.contains("--cacert"), "{ran:?}");
}

#[test]
fn kvbench_over_tls_both_protocols() {
    let pki = Pki::new();
    let server = pki.server(&["--tls-only"]);
    let addr = server.addr.to_string();
    let ca = pki.p("ca.pem");
    for proto in ["binary", "resp"] {
        let mut cmd = Command::new(kvbench_binary());
        cmd.args(["--addr", &addr, "--proto", proto, "--tls", "--cacert", &ca])
            .args(["-c", "4", "-P", "16", "-n", "2000", "--quiet"]);
        let ran = run_bounded(&mut cmd, CHILD_LIMIT);
        assert!(ran.status.success(), "kvbench --proto {proto}: {ran:?}");
    }
    // And it really needs TLS: without it kvbench can't get through.
    let mut cmd = Command::new(kvbench_binary());
    cmd.args([
        "--addr", &addr, "--proto", "resp", "-c", "1", "-n", "10", "--quiet",
    ]);
    let ran = run_bounded(&mut cmd, CHILD_LIMIT);
    assert!(
        !ran.status.success(),
        "plaintext kvbench was served: {ran:?}"
    );
}

#[tokio::test]
async fn stalled_handshake_does_not_block_others_and_times_out() {
    let pki = Pki::new();
    let server = pki.server(&[
        "--tls-only",
        "--threads",
        "1",
        "--tls-handshake-timeout-ms",
        "500",
        "--log-level",
        "ringkv=debug",
    ]);
    // One client connects and sends nothing at all (with --tls-only, the same deadline).
    let mut silent = server.tcp();
    // The start of a ClientHello record (type 0x16, TLS 1.0 record version, 512 bytes
    // announced), then nothing.
    let mut stalled = server.tcp();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .unwrap();
    // Another client on the same (only) event loop is served meanwhile.
    let client = Client::connect(server.addr, tls_config(pki.client_tls("ca.pem", None)))
        .await
        .expect("TLS connect while another handshake stalls");
    put_get(&client).await;
    // The stalled one is closed once its deadline passes, and counted.
    let t0 = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        (closed_by_peer(&mut stalled), closed_by_peer(&mut silent))
    });
    assert_eq!(
        closed.await.unwrap(),
        (true, true),
        "(stalled, silent) closed"
    );
    assert!(t0.elapsed() < DEADLINE);
    assert_eq!(tls_handshake_failures(&client).await, 2);
    // The log is read from the server's stderr by another thread: wait for it to catch up.
    let until = Instant::now() + DEADLINE;
    let mut log = server.log_text();
    while log.matches("TLS handshake failed").count() < 2 && Instant::now() < until {
        std::thread::park_timeout(Duration::from_millis(10));
        log = server.log_text();
    }
    assert_eq!(
        log.matches("TLS handshake failed").count(),
        2,
        "logged at debug:\n{log}"
    );
    assert!(log.contains("DEBUG"), "{log}");
}

/// Without --tls-only, a client that connects and stays silent may be about to speak
/// plaintext: the handshake deadline does not close it.
#[tokio::test]
async fn silent_client_stays_open_without_tls_only() {
    let pki = Pki::new();
    let server = pki.server(&["--threads", "1", "--tls-handshake-timeout-ms", "300"]);
    let mut silent = server.tcp();
    // Opened after the silent one, so its deadline passes later.
    let mut stalled = server.tcp();
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
    let stalled = tokio::task::spawn_blocking(move || closed_by_peer(&mut stalled));
    assert!(
        stalled.await.unwrap(),
        "the stalled handshake was never closed"
    );
    silent.write_all(b"PING\r\n").unwrap();
    assert_eq!(read_n(&mut silent, 7), b"+PONG\r\n");
}

#[test]
fn tls_settings_from_the_config_file() {
    let pki = Pki::new();
    let conf = pki.path("ringkv.toml");
    std::fs::write(
        &conf,
        format!(
            "tls-cert = {:?}\ntls_key = {:?}\ntls-ca = {:?}\ntls-auth-clients = \"optional\"\n\
             tls-only = true\ntls-handshake-timeout-ms = 2000\n",
            pki.p("server.pem"),
            pki.p("server.key"),
            pki.p("ca.pem"),
        ),
    )
    .unwrap();
    let server = Server::start(&["--config", conf.to_str().unwrap()]);
    assert!(
        server.log_text().contains("TLS only"),
        "{}",
        server.log_text()
    );
    let mut s = server.tcp();
    s.write_all(b"PING\r\n").unwrap();
    let reply = String::from_utf8_lossy(&read_n(&mut s, 1 << 16)).into_owned();
    assert!(reply.starts_with("-ERR TLS required"), "{reply:?}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = Client::connect(server.addr, tls_config(pki.client_tls("ca.pem", None)))
            .await
            .expect("optional client certificates: none needed");
        put_get(&c).await;
    });
}

/// Starts ringkv with these flags, expecting it to refuse; returns what it said.
fn refused(args: &[&str]) -> String {
    match Server::try_start(args) {
        Ok(_) => panic!("ringkv started with {args:?}"),
        Err(log) => log,
    }
}

#[test]
fn bad_tls_settings_stop_the_start_with_a_clear_error() {
    let pki = Pki::new();
    let (cert, key, ca) = (pki.p("server.pem"), pki.p("server.key"), pki.p("ca.pem"));
    let missing = pki.p("missing.pem");
    let log = refused(&["--tls-cert", &missing, "--tls-key", &key]);
    assert!(
        log.contains(&missing) && log.contains("--tls-cert"),
        "{log}"
    );
    // A key where the certificate should be.
    let log = refused(&["--tls-cert", &key, "--tls-key", &key]);
    assert!(
        log.contains("holds no PEM certificate") && log.contains(&key),
        "{log}"
    );
    let log = refused(&["--tls-cert", &cert, "--tls-key", &cert]);
    assert!(
        log.contains("no usable private key") && log.contains(&cert),
        "{log}"
    );
    // The key of another certificate.
    let other_key = pki.p("other-server.key");
    let log = refused(&["--tls-cert", &cert, "--tls-key", &other_key]);
    assert!(
        log.contains("is the key the one of this certificate"),
        "{log}"
    );
    let log = refused(&["--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &missing]);
    assert!(log.contains(&missing) && log.contains("--tls-ca"), "{log}");
    let log = refused(&["--tls-cert", &cert]);
    assert!(
        log.contains("--tls-cert and --tls-key go together"),
        "{log}"
    );
    let log = refused(&["--tls-only"]);
    assert!(log.contains("--tls-only needs --tls-cert"), "{log}");
    let log = refused(&["--tls-cert", &cert, "--tls-key", &key, "--tls-auth-clients"]);
    assert!(log.contains("needs --tls-ca"), "{log}");
    let log = refused(&["--tls-ca", &ca]);
    assert!(log.contains("--tls-ca needs --tls-cert"), "{log}");
}

/// A raw-byte check that the plaintext refusal also reaches a client that sent a lot before
/// reading (the server drains what it was sent before closing, so no reset eats the reply).
#[test]
fn refusal_survives_a_large_plaintext_request() {
    let pki = Pki::new();
    let server = pki.server(&["--tls-only"]);
    let mut s = server.tcp();
    let big = format!(
        "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$30000\r\n{}\r\n",
        "x".repeat(30_000)
    );
    s.write_all(big.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.starts_with("-ERR TLS required on this port"),
        "{reply:?}"
    );
}

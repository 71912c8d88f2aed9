//! TLS for the client port: loading the certificate, key and client CA at startup, and the
//! server side of a handshake (with a deadline) for connections whose first byte says TLS.
//!
//! TLS shares the one port with plaintext: a TLS connection starts with a handshake record,
//! whose first byte is 0x16. A binary connection starts with 0x00 and RESP never starts with
//! 0x16 (a control character, not a command letter or `*`), so the first byte decides.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ringkv_proto::{FrameWriter, Protocol};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use crate::config::{Config, TlsAuthClients};
use crate::sockets::{self, TcpStream};

/// First byte of a TLS record of type handshake (RFC 8446 §5.1), i.e. of every ClientHello.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// The server's TLS settings, built once at startup.
pub struct TlsServer {
    pub acceptor: TlsAcceptor,
    /// Refuse plaintext connections (`--tls-only`).
    pub only: bool,
    /// Deadline of a handshake, counted from accept (`--tls-handshake-timeout-ms`).
    pub handshake_timeout: Duration,
    /// Handshakes that failed or ran past the deadline, and plaintext connections refused by
    /// `--tls-only` (INFO stats `tls_handshake_failures`). Shared by the loops; touched only
    /// once per failed connection, never per request.
    failures: AtomicU64,
}

impl TlsServer {
    pub fn handshake_failures(&self) -> u64 {
        self.failures.load(Relaxed)
    }

    /// CONFIG RESETSTAT.
    pub fn reset_stats(&self) {
        self.failures.store(0, Relaxed);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("can't read TLS {what} file {path}: {source} (check the path given to --{flag})")]
    Read {
        what: &'static str,
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "TLS {what} file {path} holds no PEM certificate (expected \"-----BEGIN CERTIFICATE-----\"; \
         check the file given to --{flag})"
    )]
    NoCertificate {
        what: &'static str,
        flag: &'static str,
        path: PathBuf,
    },
    #[error(
        "TLS key file {path} holds no usable private key ({detail}); --tls-key needs a PEM \
         \"PRIVATE KEY\" (PKCS#8), \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block, unencrypted"
    )]
    NoKey { path: PathBuf, detail: String },
    #[error("TLS CA file {path} can't be used to check client certificates: {detail}")]
    BadCa { path: PathBuf, detail: String },
    #[error(
        "the TLS certificate {cert} and key {key} don't make a usable server identity: {source} \
         (is the key the one of this certificate?)"
    )]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// rustls on *ring*, chosen explicitly (never the process default, which another crate could
/// change). rustls 0.23.48 deprecated it for lacking post-quantum key exchange; the
/// alternative, aws-lc-rs, needs a large C build. Revisit when PQ key exchange is wanted.
#[allow(deprecated)]
fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Builds the TLS settings from the configuration, or `None` without `--tls-cert`.
pub fn load(cfg: &Config) -> Result<Option<TlsServer>, TlsError> {
    let (Some(cert_path), Some(key_path)) = (&cfg.tls_cert, &cfg.tls_key) else {
        return Ok(None);
    };
    let certs = read_certs(cert_path, "certificate", "tls-cert")?;
    let key = read_key(key_path)?;
    let provider = Arc::new(crypto_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Identity {
            cert: cert_path.clone(),
            key: key_path.clone(),
            source,
        })?;
    let builder = match (&cfg.tls_ca, cfg.tls_auth_clients) {
        (Some(ca_path), mode @ (TlsAuthClients::Yes | TlsAuthClients::Optional)) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca_path, "CA", "tls-ca")? {
                roots.add(c).map_err(|e| TlsError::BadCa {
                    path: ca_path.clone(),
                    detail: e.to_string(),
                })?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = match mode {
                TlsAuthClients::Optional => v.allow_unauthenticated(),
                TlsAuthClients::Yes | TlsAuthClients::No => v,
            };
            let v = v.build().map_err(|e| TlsError::BadCa {
                path: ca_path.clone(),
                detail: e.to_string(),
            })?;
            builder.with_client_cert_verifier(v)
        }
        // Config::validate refuses yes/optional without a CA.
        (_, TlsAuthClients::Yes | TlsAuthClients::Optional | TlsAuthClients::No) => {
            builder.with_no_client_auth()
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Identity {
            cert: cert_path.clone(),
            key: key_path.clone(),
            source,
        })?;
    Ok(Some(TlsServer {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        only: cfg.tls_only,
        handshake_timeout: Duration::from_millis(cfg.tls_handshake_timeout_ms),
        failures: AtomicU64::new(0),
    }))
}

fn read_file(path: &Path, what: &'static str, flag: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        flag,
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(
    path: &Path,
    what: &'static str,
    flag: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path, what, flag)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            flag,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path, "key", "tls-key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::NoKey {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// What a TLS-enabled server makes of a new connection.
pub enum Accepted {
    /// Plaintext, allowed (no `--tls-only`); nothing was read from it.
    Plain(TcpStream),
    /// TLS, handshake done.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Refused, failed or timed out (already counted and logged), or the server is stopping.
    Closed,
}

/// After refusing a plaintext connection, read (and drop) at most this much of what the
/// client sent, so that closing doesn't reset the connection before the client has read the
/// error (a close with unread input sends RST, which can discard the reply).
const REFUSED_DRAIN_BYTES: usize = 64 * 1024;
const REFUSED_DRAIN_MS: u64 = 1_000;

/// Looks at the first byte (without consuming it) and, for TLS, runs the handshake. Waiting
/// for the first byte counts towards the handshake deadline only with `--tls-only`: in mixed
/// mode a plaintext client may connect and stay silent, as it may without TLS.
/// `shutdown` turns true when the server stops, which abandons the wait.
/// `idle` is `--timeout`: a silent client in mixed mode is closed after it, as in `run`.
pub async fn accept(
    tls: &TlsServer,
    mut stream: TcpStream,
    mut shutdown: watch::Receiver<bool>,
    idle: Option<Duration>,
) -> Accepted {
    let peer = stream.peer_addr().ok();
    let deadline = Instant::now() + tls.handshake_timeout;
    let stop = shutdown.wait_for(|s| *s);
    tokio::pin!(stop);
    let failed = |why: &dyn std::fmt::Display| {
        tls.failures.fetch_add(1, Relaxed);
        debug!(peer = ?peer, "TLS handshake failed: {why}");
        Accepted::Closed
    };
    let mut first = [0u8; 1];
    let peeked = async {
        if tls.only {
            tokio::time::timeout_at(deadline, sockets::peek(&mut stream, &mut first)).await
        } else if let Some(idle) = idle {
            match tokio::time::timeout(idle, sockets::peek(&mut stream, &mut first)).await {
                Ok(r) => Ok(r),
                // Idle, not a failed handshake.
                Err(_) => Ok(Ok(0)),
            }
        } else {
            Ok(sockets::peek(&mut stream, &mut first).await)
        }
    };
    let peeked = tokio::select! {
        r = peeked => r,
        _ = &mut stop => return Accepted::Closed,
    };
    match peeked {
        Ok(Ok(1..)) => {}
        // Closed or reset before sending anything: not a failed handshake.
        Ok(Ok(0) | Err(_)) => return Accepted::Closed,
        Err(_) => {
            return failed(&"no ClientHello before the deadline (--tls-handshake-timeout-ms)")
        }
    }
    if first[0] != TLS_HANDSHAKE_BYTE {
        if !tls.only {
            return Accepted::Plain(stream);
        }
        // Counted first: the refusal itself may take a while (it drains the input).
        let closed = failed(&"plaintext connection refused (--tls-only)");
        refuse_plaintext(stream, first[0]).await;
        return closed;
    }
    let handshake = tokio::time::timeout_at(deadline, tls.acceptor.accept(stream));
    let r = tokio::select! {
        r = handshake => r,
        _ = &mut stop => return Accepted::Closed,
    };
    match r {
        Ok(Ok(s)) => Accepted::Tls(Box::new(s)),
        Ok(Err(e)) => failed(&e),
        Err(_) => failed(&"not finished before the deadline (--tls-handshake-timeout-ms)"),
    }
}

/// Tells a plaintext client, in its own protocol, that this port wants TLS, then closes.
async fn refuse_plaintext(mut stream: TcpStream, first: u8) {
    const MSG: &str = "ERR TLS required on this port: the server runs with --tls-only; \
                       connect with TLS (redis-cli --tls --cacert CA.pem, kvsh --tls --cacert CA.pem)";
    let mut out = BytesMut::new();
    match Protocol::detect(first) {
        Protocol::Binary => FrameWriter::new(&mut out, 0, 0).fatal(MSG),
        Protocol::Resp => {
            out.extend_from_slice(b"-");
            out.extend_from_slice(MSG.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    if stream.write_all(&out).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut left = REFUSED_DRAIN_BYTES;
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(REFUSED_DRAIN_MS), drain).await;
}

//! TLS for the client side (rustls on *ring*, no OpenSSL): the CA that signed the server's
//! certificate and, when the server asks for one, a client certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::{ClientError, Result};

/// Where the TLS material is. Build a [`TlsConfig`] from it with [`TlsConfig::from_options`].
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file with the CA certificate(s) the server's certificate must be signed by.
    pub ca_file: PathBuf,
    /// PEM client certificate chain, for a server started with `--tls-auth-clients`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Name the server's certificate must carry (a DNS name or an IP address). Default: the
    /// IP address connected to.
    pub server_name: Option<String>,
}

/// Loaded TLS settings, cheap to clone. Set [`crate::ClientConfig::tls`] to use them.
#[derive(Clone)]
pub struct TlsConfig {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
    ca_file: PathBuf,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_file", &self.ca_file)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// rustls on *ring*, chosen explicitly rather than the process default. rustls 0.23.48
/// deprecated it for lacking post-quantum key exchange; aws-lc-rs would need a large C build.
#[allow(deprecated)]
fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn tls_err(msg: String) -> ClientError {
    ClientError::Tls(msg)
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        tls_err(format!(
            "can't read the TLS {what} file {}: {e}",
            path.display()
        ))
    })
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path, what)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(std::result::Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(tls_err(format!(
            "the TLS {what} file {} holds no PEM certificate (expected \"-----BEGIN CERTIFICATE-----\")",
            path.display()
        )));
    }
    Ok(certs)
}

impl TlsConfig {
    /// Reads the files and builds the settings; errors name the file and what is wrong.
    pub fn from_options(o: &TlsOptions) -> Result<TlsConfig> {
        let mut roots = RootCertStore::empty();
        for c in read_certs(&o.ca_file, "CA")? {
            roots.add(c).map_err(|e| {
                tls_err(format!(
                    "the CA file {} holds an unusable certificate: {e}",
                    o.ca_file.display()
                ))
            })?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(crypto_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err(e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&o.cert_file, &o.key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "client certificate")?;
                let pem = read(key, "client key")?;
                let key_der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                    tls_err(format!(
                        "the TLS client key file {} holds no usable private key ({e}); it needs \
                         an unencrypted PEM private key",
                        key.display()
                    ))
                })?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                    tls_err(format!(
                        "the client certificate {} and key {} don't go together: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?
            }
            _ => {
                return Err(tls_err(
                    "a client certificate needs both its certificate and its key file".into(),
                ))
            }
        };
        let server_name = match &o.server_name {
            None => None,
            Some(n) => Some(ServerName::try_from(n.clone()).map_err(|e| {
                tls_err(format!(
                    "{n:?} is not a valid TLS server name (a DNS name or an IP address): {e}"
                ))
            })?),
        };
        Ok(TlsConfig {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            ca_file: o.ca_file.clone(),
        })
    }

    /// The rustls settings, for other TLS clients (e.g. a RESP load generator).
    pub fn rustls_config(&self) -> Arc<rustls::ClientConfig> {
        self.connector.config().clone()
    }

    /// Runs the TLS handshake on a connected socket. The server's certificate must be signed
    /// by the CA and carry the server name (default: the peer's IP address).
    pub async fn connect(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>> {
        let peer = tcp.peer_addr()?;
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(peer.ip().into()));
        self.connector
            .connect(name, tcp)
            .await
            .map_err(|e| self.handshake_error(peer, e))
    }

    fn handshake_error(&self, peer: SocketAddr, e: std::io::Error) -> ClientError {
        let text = e.to_string();
        let hint = if text.contains("invalid peer certificate") {
            format!(
                "the server's certificate is not accepted: is it signed by the CA in {}, and \
                 does it name the address you connect to?",
                self.ca_file.display()
            )
        } else if text.contains("CertificateRequired") || text.contains("certificate required") {
            "the server requires a client certificate (give one: cert and key files)".into()
        } else if text.contains("corrupt message") || text.contains("InvalidContentType") {
            "is TLS enabled on the server (ringkv --tls-cert)?".into()
        } else {
            "is TLS enabled on the server, and are the certificates right?".into()
        };
        tls_err(format!("TLS handshake with {peer} failed: {text} ({hint})"))
    }
}

//! TLS for the HTTP and PostgreSQL listeners (rustls). The certificate chain, its key and the
//! client CA are files, read again whenever one of them changes (cert-manager renews a Secret in
//! place), so a renewed certificate is served without a restart; a broken new set keeps the old
//! one serving and says why. A client certificate signed by the client CA names its holder by its
//! common name (`access` gives that name its roles).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read [tls] {key} {}: {message}", path.display())]
    Read { key: &'static str, path: PathBuf, message: String },
    #[error("[tls] {key} {}: {message}", path.display())]
    Invalid { key: &'static str, path: PathBuf, message: String },
}

/// The listener's current server configuration, with the files it was built from.
pub struct Tls {
    files: TlsFiles,
    /// The application protocol the listener speaks (ALPN), offered to clients that ask.
    protocol: &'static [u8],
    current: RwLock<(Stamp, Arc<ServerConfig>)>,
}

/// The modification time and length of each file: a change in any means reading them again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Vec<Option<(SystemTime, u64)>>);

impl Stamp {
    fn of(files: &TlsFiles) -> Stamp {
        let stamp = |path: &Path| {
            std::fs::metadata(path).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
        };
        Stamp(
            [Some(&files.cert), Some(&files.key), files.client_ca.as_ref()]
                .into_iter()
                .flatten()
                .map(|p| stamp(p))
                .collect(),
        )
    }
}

impl Tls {
    pub fn load(files: TlsFiles, protocol: &'static [u8]) -> Result<Tls, TlsError> {
        let stamp = Stamp::of(&files);
        let config = Arc::new(server_config(&files, protocol)?);
        Ok(Tls { files, protocol, current: RwLock::new((stamp, config)) })
    }

    /// An acceptor with the configuration of the moment.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().expect("never poisoned").1.clone())
    }

    /// Reads the files again if any of them changed since the last read. `Ok(true)`: the new
    /// set serves from now on; an error leaves the old one serving.
    pub fn refresh(&self) -> Result<bool, TlsError> {
        let stamp = Stamp::of(&self.files);
        if stamp == self.current.read().expect("never poisoned").0 {
            return Ok(false);
        }
        let built = server_config(&self.files, self.protocol);
        let mut current = self.current.write().expect("never poisoned");
        // A broken set is not read again until it changes once more.
        current.0 = stamp;
        current.1 = Arc::new(built?);
        Ok(true)
    }

    /// Looks for changed files every `every` until `shutdown`.
    pub async fn keep_fresh(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            match self.refresh() {
                Ok(true) => {
                    tracing::info!(cert = %self.files.cert.display(), "tls: the renewed certificate serves from now on")
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "tls: the changed files do not make a certificate; the previous one still serves")
                }
            }
        }
    }
}

/// The common name of the client's certificate, verified against the client CA during the
/// handshake; none without one.
pub fn client_name(connection: &ServerConnection) -> Option<String> {
    let leaf = connection.peer_certificates()?.first()?;
    x509_certificate::X509Certificate::from_der(leaf.as_ref()).ok()?.subject_common_name()
}

fn server_config(files: &TlsFiles, protocol: &'static [u8]) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates("cert_file", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| read_error("key_file", &files.key, e))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates("client_ca_file", path)? {
                roots.add(ca).map_err(|e| invalid("client_ca_file", path, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match files.client_certificate_required {
                true => verifier,
                false => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| invalid("client_ca_file", path, e))?)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| invalid("key_file", &files.key, format!("{e} (is it the key of cert_file?)")))?;
    config.alpn_protocols = vec![protocol.to_vec()];
    Ok(config)
}

fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(key, path, e))?;
    match chain.is_empty() {
        true => Err(invalid(key, path, "no certificate in it (PEM, -----BEGIN CERTIFICATE-----)")),
        false => Ok(chain),
    }
}

fn read_error(key: &'static str, path: &Path, error: impl std::fmt::Display) -> TlsError {
    TlsError::Read { key, path: path.into(), message: error.to_string() }
}

fn invalid(key: &'static str, path: &Path, error: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid { key, path: path.into(), message: error.to_string() }
}

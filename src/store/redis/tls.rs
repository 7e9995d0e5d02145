//! TLS for `rediss://` (feature `redis-tls`), made here rather than by
//! redis-rs: its rustls support builds its config with
//! `ClientConfig::builder()`, which takes the process-level crypto provider
//! and installs one from rustls's crate features when none is, and panics
//! when both of them are on. Ours is built with
//! `ClientConfig::builder_with_provider` from [`provider`], and never
//! installs anything; the TLS stream is then handed to redis-rs as a
//! multiplexed connection.

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, ErrorKind, RedisError};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::store::Error;

/// The crypto provider of Redis TLS: the crate's one policy
/// ([`crate::tls::crypto_provider`]): the application's process-level
/// provider when it installed one, else the one the crate's `aws-lc-rs` or
/// `ring` feature names. Never installed process-wide.
pub(super) fn provider() -> Result<Arc<CryptoProvider>, rustls::Error> {
    crate::tls::crypto_provider().map_err(|error| rustls::Error::General(error.to_string()))
}

/// A `rediss://` store's TLS settings.
#[derive(Clone, Default)]
pub(super) struct Tls {
    /// The CAs to trust; when `None`, the roots of the OAuth2 client's https
    /// (the platform's with `native-roots`, Mozilla's with `webpki-roots`).
    roots: Option<Arc<RootCertStore>>,
    /// A client certificate chain and its key.
    client: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    /// The application's own config, used as it is.
    config: Option<Arc<ClientConfig>>,
}

impl Tls {
    /// Trusts only the CA certificates in `pem`.
    pub(super) fn with_ca_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|_| Error::new("the CA PEM does not parse"))?;
            roots.add(cert).map_err(Error::new)?;
        }
        if roots.is_empty() {
            return Err(Error::new("the CA PEM holds no certificate"));
        }
        self.roots = Some(Arc::new(roots));
        self.check()
    }

    /// Presents the certificate chain in `chain_pem`, with the private key
    /// in `key_pem` (PKCS#8, PKCS#1 or SEC1).
    pub(super) fn with_client_pem(
        mut self,
        chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, Error> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Error::new("the client certificate PEM does not parse"))?;
        if chain.is_empty() {
            return Err(Error::new(
                "the client certificate PEM holds no certificate",
            ));
        }
        // Never the key's bytes in a message.
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|_| Error::new("the client key PEM holds no private key"))?;
        self.client = Some((chain, Arc::new(key)));
        self.check()
    }

    /// Uses `config` as it is: its provider, roots and client certificate.
    pub(super) fn with_config(mut self, config: Arc<ClientConfig>) -> Self {
        self.config = Some(config);
        self
    }

    /// Builds the config once now, so that a bad certificate or key is an
    /// error of the setter, not of every connection.
    fn check(self) -> Result<Self, Error> {
        self.client_config().map_err(Error::new)?;
        Ok(self)
    }

    fn client_config(&self) -> Result<Arc<ClientConfig>, rustls::Error> {
        if let Some(config) = &self.config {
            return Ok(Arc::clone(config));
        }
        let roots = match &self.roots {
            Some(roots) => RootCertStore::clone(roots),
            None => crate::tls::root_store(&[])
                .map_err(|error| rustls::Error::General(error.to_string()))?,
        };
        let builder = ClientConfig::builder_with_provider(provider()?)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match &self.client {
            Some((chain, key)) => builder.with_client_auth_cert(chain.clone(), key.clone_key())?,
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }

    /// A multiplexed connection over TLS to the host of `info`, which
    /// authenticates and selects its database as redis-rs's own do.
    pub(super) async fn connect(
        &self,
        info: &ConnectionInfo,
        config: AsyncConnectionConfig,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "TLS needs a host and port",
            )));
        };
        let tls = self
            .client_config()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let name = ServerName::try_from(host.clone()).map_err(|_| {
            RedisError::from((
                ErrorKind::InvalidClientConfig,
                "not a valid TLS server name",
            ))
        })?;
        let tcp = TcpStream::connect((host.as_str(), *port)).await?;
        tcp.set_nodelay(true)?;
        let stream = TlsConnector::from(tls).connect(name, tcp).await?;
        let (conn, driver) =
            MultiplexedConnection::new_with_config(info.redis_settings(), stream, config).await?;
        // The driver ends when the last handle of the connection is dropped.
        tokio::spawn(driver);
        Ok(conn)
    }
}

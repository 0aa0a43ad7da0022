//! TLS for the API (rustls with the ring provider), when the configuration
//! names a certificate chain and a key (PEM).
//!
//! Handshakes run on tasks of their own, with a time limit, so a client
//! that connects and says nothing cannot hold up the others; finished
//! connections reach the server through a bounded channel.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
pub use tokio_rustls::TlsAcceptor;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("api.tls.{field}: cannot read {path}: {source}")]
    Read {
        field: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("api.tls.{field}: {path}: {message}")]
    Pem {
        field: &'static str,
        path: String,
        message: String,
    },
    #[error("api.tls: the certificate and key do not go together: {0}")]
    Config(rustls::Error),
}

/// How long a client may take to finish its handshake.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        field,
        path: path.display().to_string(),
        source,
    })
}

/// Loads a PEM certificate chain and private key.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let pem = |field, path: &Path, message: String| TlsError::Pem {
        field,
        path: path.display().to_string(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut read("cert", cert)?.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| pem("cert", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem("cert", cert, "no certificate in the file".into()));
    }
    let key_der: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut read("key", key)?.as_slice())
            .map_err(|e| pem("key", key, e.to_string()))?
            .ok_or_else(|| pem("key", key, "no private key in the file".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(TlsError::Config)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A listener that hands the server finished TLS connections.
#[derive(Debug)]
pub struct TlsListener {
    connections: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` (a task of the current runtime).
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (send, connections) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = tcp.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let (acceptor, send) = (acceptor.clone(), send.clone());
                tokio::spawn(async move {
                    // A failed or slow handshake only ends its own connection.
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(stream)).await
                    {
                        let _ = send.send((tls, peer)).await;
                    }
                });
            }
        });
        Ok(Self { connections, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accepting task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

//! The listener: plain HTTP or TLS (`--tls-cert/--tls-key`), HTTP/1.1 and HTTP/2, the
//! client's address handed to the handlers, and a graceful stop on SIGTERM/SIGINT (no new
//! connections, in-flight responses finish, then exit; a second signal exits at once).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::settings::serve::TlsFiles;

/// The client's address, in each request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// How long a client gets for its TLS handshake and for each request's headers.
const HANDSHAKE: Duration = Duration::from_secs(30);

/// How long in-flight responses get after a stop signal.
const DRAIN: Duration = Duration::from_secs(30);

/// A TLS acceptor for the certificate and key (ALPN: h2, http/1.1).
pub fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(&files.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--tls-cert: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|e| format!("--tls-key: {e}"))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert/--tls-key do not make a usable pair: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Resolves on the first SIGTERM or SIGINT; a second one exits the process at once.
async fn first_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("error: second signal: exiting now");
        std::process::exit(1);
    });
}

/// Serves `app` on `listener` until a stop signal, then drains.
pub async fn serve(listener: TcpListener, app: Router, tls: Option<TlsAcceptor>) {
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    // A client that opens a connection and sends nothing (or headers byte by byte) is cut.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE);
    let builder = Arc::new(builder);
    let signal = first_signal();
    tokio::pin!(signal);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut signal => break,
        };
        let _ = socket.set_nodelay(true);
        let service =
            app.clone()
                .map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(Peer(peer));
                    req
                });
        let service = TowerToHyperService::new(service);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let result = match tls {
                Some(acceptor) => match tokio::time::timeout(HANDSHAKE, acceptor.accept(socket))
                    .await
                    .unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
                {
                    Ok(stream) => {
                        let conn = builder.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(conn).await
                    }
                    Err(e) => {
                        tracing::debug!("{peer}: TLS handshake failed: {e}");
                        return;
                    }
                },
                None => {
                    let conn = builder.serve_connection(TokioIo::new(socket), service);
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = result {
                tracing::debug!("{peer}: connection ended: {e}");
            }
        });
    }
    drop(listener);
    tracing::info!(
        "stop signal: no new connections; draining {} (up to {}s)",
        graceful.count(),
        DRAIN.as_secs()
    );
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "drain: connections still open after {}s; exiting",
            DRAIN.as_secs()
        );
    }
}

//! A loopback HTTP/1.1 server on a thread and runtime of its own, so it keeps answering
//! while a test blocks on the gcrsync process. Used by the fault proxy and the fake GitHub.

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http_body_util::{BodyExt, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response};

pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A whole response body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

/// Accepts connections on a free loopback port, each handed to `on_connection` on a
/// runtime of its own; returns `host:port`.
pub fn listen<F, Fut>(on_connection: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap().to_string()).unwrap();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(on_connection(socket));
            }
        });
    });
    rx.recv().unwrap()
}

/// The client end of the connection a request came on (a request extension), to count
/// the connections a client opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer(pub std::net::SocketAddr);

/// Serves `handler` over HTTP/1.1 on a free loopback port; returns `host:port`.
pub fn serve<F, Fut>(handler: F) -> String
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    listen(move |socket| {
        let handler = handler.clone();
        let peer = socket.peer_addr().ok().map(Peer);
        async move {
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                if let Some(peer) = peer {
                    req.extensions_mut().insert(peer);
                }
                let answer = handler(req);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let io = hyper_util::rt::TokioIo::new(socket);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        }
    })
}

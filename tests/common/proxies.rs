//! Forward proxies for the network tests: an HTTP proxy (absolute-form requests) and a
//! SOCKS5 proxy (CONNECT, no auth). Both count what passes through them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::body::Incoming;
use hyper::{Request, Response};

use super::server::{self, Body};

pub struct Counted {
    pub addr: String,
    count: Arc<AtomicUsize>,
    hosts: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Counted {
    /// The `host:port` of every request so far (HTTP proxy only).
    pub fn hosts(&self) -> Vec<String> {
        self.hosts.lock().unwrap().clone()
    }

    /// Requests (HTTP proxy) or connections (SOCKS5) so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// An HTTP proxy for `http://` URLs: forwards each absolute-form request.
pub fn http_proxy() -> Counted {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let hosts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = hosts.clone();
    let addr = server::serve(move |req: Request<Incoming>| {
        seen.fetch_add(1, Ordering::SeqCst);
        log.lock().unwrap().push(
            req.uri()
                .authority()
                .map_or(String::new(), |a| a.to_string()),
        );
        let client = client.clone();
        async move { forward_absolute(req, client).await }
    });
    Counted { addr, count, hosts }
}

async fn forward_absolute(req: Request<Incoming>, client: reqwest::Client) -> Response<Body> {
    use futures_util::StreamExt;
    use http_body_util::{BodyExt, StreamBody};
    let Some(authority) = req.uri().authority().map(|a| a.to_string()) else {
        return Response::builder()
            .status(400)
            .body(server::full("proxy needs an absolute URI"))
            .unwrap();
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    let mut upstream = client.request(req.method().clone(), format!("http://{authority}{path}"));
    for (name, value) in req.headers() {
        if name != "host" && name != "proxy-connection" {
            upstream = upstream.header(name, value);
        }
    }
    let body = reqwest::Body::wrap_stream(req.into_body().into_data_stream());
    let Ok(response) = upstream.body(body).send().await else {
        return Response::builder()
            .status(502)
            .body(server::full("upstream failed"))
            .unwrap();
    };
    let mut builder = Response::builder().status(response.status().as_u16());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let stream = response.bytes_stream().map(|c| {
        c.map(hyper::body::Frame::data)
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    });
    builder
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

/// A SOCKS5 proxy (RFC 1928, "no authentication", CONNECT to IPv4 or a domain name).
pub fn socks5_proxy() -> Counted {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let addr = server::listen(move |socket| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move {
            let _ = socks5_session(socket).await;
        }
    });
    Counted {
        addr,
        count,
        hosts: Default::default(),
    }
}

async fn socks5_session(mut client: tokio::net::TcpStream) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut greeting = [0u8; 2];
    client.read_exact(&mut greeting).await?;
    let mut methods = vec![0u8; greeting[1] as usize];
    client.read_exact(&mut methods).await?;
    client.write_all(&[5, 0]).await?;
    let mut request = [0u8; 4];
    client.read_exact(&mut request).await?;
    let host = match request[3] {
        1 => {
            let mut ip = [0u8; 4];
            client.read_exact(&mut ip).await?;
            std::net::Ipv4Addr::from(ip).to_string()
        }
        3 => {
            let mut len = [0u8; 1];
            client.read_exact(&mut len).await?;
            let mut name = vec![0u8; len[0] as usize];
            client.read_exact(&mut name).await?;
            String::from_utf8_lossy(&name).into_owned()
        }
        _ => return Ok(()),
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port).await?;
    let mut upstream =
        tokio::net::TcpStream::connect((host.as_str(), u16::from_be_bytes(port))).await?;
    client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

//! A fault-injecting reverse proxy in front of a real registry: it speaks HTTP/1.1 on a
//! loopback port, forwards everything, logs every request, and answers with the faults it
//! is told to (statuses with `Retry-After`, bodies cut or altered mid-stream).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};

use super::server::{self, Body, full};

/// What to do to a matching request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer this status (with `Retry-After: secs` when given) without forwarding.
    Status(u16, Option<u64>),
    /// Forward, but end the response body with an error after this many bytes.
    CutAfter(usize),
    /// Forward, but flip one byte of the response body.
    Corrupt,
    /// Wait this long before answering at all (a hung server).
    Stall(std::time::Duration),
    /// Forward, but wait this long before each piece of the body (slow, never idle long).
    Trickle(std::time::Duration),
}

/// Applies `fault` to the next `times` requests whose method and path match.
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: &'static str,
    pub path_contains: String,
    pub times: usize,
    pub fault: Fault,
}

#[derive(Default)]
struct State {
    headers: Vec<(String, String)>,
    rules: Vec<Rule>,
    log: Vec<(String, String, String)>,
    /// The client ends of every connection requests came on.
    peers: std::collections::HashSet<server::Peer>,
}

pub struct FaultProxy {
    pub addr: String,
    state: Arc<Mutex<State>>,
}

fn injected(status: u16, retry_after: Option<u64>) -> Response<Body> {
    let code = match status {
        404 => "NAME_UNKNOWN",
        401 => "UNAUTHORIZED",
        _ => "INJECTED",
    };
    let body = format!(
        r#"{{"errors":[{{"code":"{code}","message":"fault injected with status {status}"}}]}}"#
    );
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(secs) = retry_after {
        response = response.header("retry-after", secs.to_string());
    }
    if status == 401 {
        // As distribution's htpasswd auth (or a proxy's per-repository ACL) refuses.
        response = response.header("www-authenticate", r#"Basic realm="test""#);
    }
    response.body(full(body)).unwrap()
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let (shared, upstream) = (state.clone(), upstream.to_string());
        let proxy_addr = Arc::new(Mutex::new(String::new()));
        let own_addr = proxy_addr.clone();
        let addr = server::serve(move |req| {
            let own = own_addr.lock().unwrap().clone();
            handle(req, shared.clone(), client.clone(), upstream.clone(), own)
        });
        *proxy_addr.lock().unwrap() = addr.clone();
        FaultProxy { addr, state }
    }

    /// Adds this header to every forwarded response (e.g. Docker Hub's `RateLimit-Remaining`).
    pub fn add_header(&self, name: &str, value: &str) {
        self.state
            .lock()
            .unwrap()
            .headers
            .push((name.into(), value.into()));
    }

    /// Drops every rule still pending.
    pub fn clear(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    pub fn inject(&self, rule: Rule) {
        self.state.lock().unwrap().rules.push(rule);
    }

    /// How many connections requests came on so far.
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().peers.len()
    }

    /// (method, path, what happened) of every request so far.
    pub fn log(&self) -> Vec<(String, String, String)> {
        self.state.lock().unwrap().log.clone()
    }
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    client: reqwest::Client,
    upstream: String,
    proxy_addr: String,
) -> Response<Body> {
    let (method, path) = (
        req.method().to_string(),
        req.uri()
            .path_and_query()
            .map_or(String::new(), |p| p.to_string()),
    );
    let fault = {
        let mut state = state.lock().unwrap();
        if let Some(peer) = req.extensions().get::<server::Peer>() {
            state.peers.insert(*peer);
        }
        let rule = state
            .rules
            .iter_mut()
            .find(|r| r.times > 0 && r.method == method && path.contains(&r.path_contains));
        let fault = rule.map(|r| {
            r.times -= 1;
            r.fault.clone()
        });
        let range = req
            .headers()
            .get("range")
            .map(|r| format!(" [{}]", r.to_str().unwrap_or("")));
        state.log.push((
            method.clone(),
            format!("{path}{}", range.unwrap_or_default()),
            fault
                .as_ref()
                .map_or("forwarded".into(), |f| format!("{f:?}")),
        ));
        fault
    };
    match fault {
        Some(Fault::Status(status, retry_after)) => return injected(status, retry_after),
        Some(Fault::Stall(wait)) => tokio::time::sleep(wait).await,
        _ => {}
    }
    let headers = state.lock().unwrap().headers.clone();
    let mut response = forward(req, &client, &upstream, &proxy_addr, fault).await;
    for (name, value) in headers {
        response.headers_mut().insert(
            hyper::header::HeaderName::try_from(name).unwrap(),
            value.parse().unwrap(),
        );
    }
    response
}

/// Forwards `req` to `upstream`, rewriting `Location` to point back at `proxy_addr`,
/// applying a body `fault` if given.
pub async fn forward(
    req: Request<Incoming>,
    client: &reqwest::Client,
    upstream: &str,
    proxy_addr: &str,
    fault: Option<Fault>,
) -> Response<Body> {
    let path = req
        .uri()
        .path_and_query()
        .map_or(String::new(), |p| p.to_string());
    let mut upstream_req = client.request(req.method().clone(), format!("http://{upstream}{path}"));
    for (name, value) in req.headers() {
        if name != "host" {
            upstream_req = upstream_req.header(name, value);
        }
    }
    let body = reqwest::Body::wrap_stream(req.into_body().into_data_stream());
    let response = match upstream_req.body(body).send().await {
        Ok(r) => r,
        Err(_) => return injected(502, None),
    };
    let mut builder = Response::builder().status(response.status().as_u16());
    for (name, value) in response.headers() {
        let value = value
            .to_str()
            .unwrap_or_default()
            .replace(upstream, proxy_addr);
        builder = builder.header(name, value);
    }
    let mut sent = 0usize;
    let mut flipped = false;
    let trickle = match fault {
        Some(Fault::Trickle(wait)) => Some(wait),
        _ => None,
    };
    let stream = response.bytes_stream().map(move |chunk| {
        let mut chunk =
            chunk.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
        match fault {
            Some(Fault::CutAfter(limit)) if sent + chunk.len() > limit => {
                return Err("connection cut by the fault proxy".into());
            }
            Some(Fault::Corrupt) if !flipped && !chunk.is_empty() => {
                let mut bytes = chunk.to_vec();
                bytes[0] ^= 0xff;
                chunk = Bytes::from(bytes);
                flipped = true;
            }
            _ => {}
        }
        sent += chunk.len();
        Ok(Frame::data(chunk))
    });
    type Frames = std::pin::Pin<
        Box<
            dyn futures_util::Stream<
                    Item = Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
                > + Send
                + Sync,
        >,
    >;
    let stream: Frames = match trickle {
        Some(wait) => Box::pin(
            stream
                .flat_map(|item| {
                    // Pieces of 64 KiB, each after a pause: slow, but never silent for long.
                    let pieces: Vec<_> = match item {
                        Ok(frame) => {
                            let data = frame.into_data().unwrap_or_default();
                            data.chunks(64 << 10)
                                .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                                .collect()
                        }
                        Err(e) => vec![Err(e)],
                    };
                    futures_util::stream::iter(pieces)
                })
                .then(move |item| async move {
                    tokio::time::sleep(wait).await;
                    item
                }),
        ),
        _ => Box::pin(stream),
    };
    builder
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

/// A source whose image `team/large:1` has an 8 MiB layer that arrives a few KiB every
/// 50 ms (minutes in all, never idle long) through a proxy in front of `src`: a copy that
/// is surely in flight when a test signals. Returns the proxy and the layer's digest.
pub async fn slow_large_image(src: &super::TestRegistry) -> (FaultProxy, String) {
    let large = super::images::random_bytes(8 << 20);
    let digest = super::images::digest_of(&large);
    super::Pusher::new(&src.addr)
        .image("team/large", "1", super::Format::Oci, "amd64", &[large])
        .await;
    let proxy = FaultProxy::start(&src.addr);
    proxy.inject(Rule {
        method: "GET",
        path_contains: digest.clone(),
        times: 100,
        fault: Fault::Trickle(std::time::Duration::from_millis(50)),
    });
    (proxy, digest)
}

impl FaultProxy {
    /// Whether a request for `path_part` has come through.
    pub fn saw(&self, path_part: &str) -> bool {
        self.log().iter().any(|(_, p, _)| p.contains(path_part))
    }
}

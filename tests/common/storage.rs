//! A fake Google Cloud Storage for the blobs a registry redirects to, laid out as gcr.io's
//! (`/artifacts.PROJECT.appspot.com/containers/images/sha256:…?GoogleAccessId&Expires&Signature`).
//! As GCS does, it refuses a signed URL that also carries an `Authorization` header (400),
//! an expired one (400 `ExpiredToken`) and, when told, one used before (403); it serves
//! `Range` requests with 206. The bytes come from the real registry behind the front.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};

use super::server::{self, Body, full};

/// One request the storage saw.
#[derive(Debug, Clone)]
pub struct Hit {
    pub digest: String,
    pub authorization: bool,
    pub range: Option<String>,
    pub status: u16,
}

struct Url {
    repo: String,
    digest: String,
    expires: Instant,
    used: bool,
}

#[derive(Default)]
struct State {
    urls: HashMap<String, Url>,
    signed: usize,
    lifetime: Duration,
    expire_next: usize,
    one_use: bool,
    cut_next: Option<(usize, usize)>,
    hits: Vec<Hit>,
}

#[derive(Clone)]
pub struct FakeStorage {
    pub addr: String,
    state: Arc<Mutex<State>>,
}

impl FakeStorage {
    /// Storage for the blobs of the registry at `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Self {
        let state = Arc::new(Mutex::new(State {
            lifetime: Duration::from_secs(600),
            ..State::default()
        }));
        let client = reqwest::Client::new();
        let (shared, upstream) = (state.clone(), upstream.to_string());
        let addr =
            server::serve(move |req| handle(req, shared.clone(), client.clone(), upstream.clone()));
        FakeStorage { addr, state }
    }

    /// A signed URL for `digest` of `repo`, as the registry puts in `Location`.
    pub fn sign(&self, repo: &str, digest: &str) -> String {
        let mut state = self.state.lock().unwrap();
        state.signed += 1;
        let signature = format!("c2lnbmF0dXJl{}", state.signed);
        let expires = if state.expire_next > 0 {
            state.expire_next -= 1;
            Instant::now()
        } else {
            Instant::now() + state.lifetime
        };
        state.urls.insert(
            signature.clone(),
            Url {
                repo: repo.into(),
                digest: digest.into(),
                expires,
                used: false,
            },
        );
        format!(
            "http://{}/artifacts.fake-project.appspot.com/containers/images/{digest}?GoogleAccessId=gcr%40fake-project.iam.gserviceaccount.com&Expires=1700000000&Signature={signature}",
            self.addr
        )
    }

    /// The next `n` URLs signed are already expired when used.
    pub fn expire_next(&self, n: usize) {
        self.state.lock().unwrap().expire_next = n;
    }

    /// Each URL serves one request only (a cached URL fails on its second use).
    pub fn one_use(&self) {
        self.state.lock().unwrap().one_use = true;
    }

    /// The next `times` bodies longer than `bytes` are cut after that many bytes.
    pub fn cut_next(&self, bytes: usize, times: usize) {
        self.state.lock().unwrap().cut_next = Some((bytes, times));
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.lock().unwrap().hits.clone()
    }
}

fn xml(status: u16, code: &str, message: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/xml; charset=UTF-8")
        .body(full(format!(
            "<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
        )))
        .unwrap()
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    client: reqwest::Client,
    upstream: String,
) -> Response<Body> {
    let signature = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix("Signature="))
        .unwrap_or("")
        .to_string();
    let authorization = req.headers().contains_key("authorization");
    let range = req
        .headers()
        .get("range")
        .and_then(|r| r.to_str().ok())
        .map(str::to_string);
    let digest = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string();
    let (verdict, repo) = {
        let mut state = state.lock().unwrap();
        let one_use = state.one_use;
        let verdict = match state.urls.get_mut(&signature) {
            _ if authorization => Err(xml(
                400,
                "InvalidArgument",
                "Authentication via both a signed URL and an Authorization header is not allowed.",
            )),
            None => Err(xml(403, "SignatureDoesNotMatch", "Access denied.")),
            Some(url) if url.digest != digest => {
                Err(xml(403, "SignatureDoesNotMatch", "Access denied."))
            }
            Some(url) if url.expires <= Instant::now() => {
                Err(xml(400, "ExpiredToken", "Invalid argument."))
            }
            Some(url) if one_use && url.used => Err(xml(
                403,
                "AccessDenied",
                "Access denied: this signed URL was used already.",
            )),
            Some(url) => {
                url.used = true;
                Ok(url.repo.clone())
            }
        };
        match verdict {
            Ok(repo) => (None, repo),
            Err(answer) => (Some(answer), String::new()),
        }
    };
    let record = |status: u16| {
        state.lock().unwrap().hits.push(Hit {
            digest: digest.clone(),
            authorization,
            range: range.clone(),
            status,
        })
    };
    if let Some(answer) = verdict {
        record(answer.status().as_u16());
        return answer;
    }
    let mut upstream_req = client.get(format!("http://{upstream}/v2/{repo}/blobs/{digest}"));
    if let Some(r) = &range {
        upstream_req = upstream_req.header("range", r);
    }
    let Ok(response) = upstream_req.send().await else {
        record(502);
        return xml(502, "BadGateway", "upstream unreachable");
    };
    let status = response.status().as_u16();
    record(status);
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/octet-stream");
    for name in ["content-length", "content-range", "accept-ranges"] {
        if let Some(value) = response.headers().get(name) {
            builder = builder.header(name, value.to_str().unwrap());
        }
    }
    let length = response.content_length().unwrap_or(0) as usize;
    let cut = match &mut state.lock().unwrap().cut_next {
        Some((limit, times)) if *times > 0 && length > *limit => {
            *times -= 1;
            Some(*limit)
        }
        _ => None,
    };
    let mut sent = 0usize;
    let stream = response.bytes_stream().map(move |chunk| {
        let chunk: Bytes =
            chunk.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
        if let Some(limit) = cut
            && sent + chunk.len() > limit
        {
            return Err("connection cut by the fake storage".into());
        }
        sent += chunk.len();
        Ok(Frame::data(chunk))
    });
    builder
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap()
}

//! A fake Google OAuth token endpoint that really verifies the service account's signed
//! JWT assertion (RS256, checked with `openssl` against the account's public key) before
//! issuing an access token, so `gcp_auth` really signs and exchanges.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

use super::server::{self, Body, full};

pub const CLIENT_EMAIL: &str = "mirror@test-project.iam.gserviceaccount.com";

pub struct FakeGoogle {
    pub addr: String,
    /// Access tokens issued so far (a registry fake may trust them).
    pub issued: Arc<Mutex<HashSet<String>>>,
    pub requests: Arc<Mutex<usize>>,
    private_key: String,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is needed for the Google OAuth fake");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl FakeGoogle {
    /// Generates the service account's RSA key pair in `dir` and starts the endpoint.
    pub fn start(dir: &Path) -> Self {
        let (key, public) = (dir.join("sa-key.pem"), dir.join("sa-pub.pem"));
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            key.to_str().unwrap(),
        ]);
        openssl(&[
            "pkey",
            "-in",
            key.to_str().unwrap(),
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ]);
        let issued = Arc::new(Mutex::new(HashSet::new()));
        let requests = Arc::new(Mutex::new(0));
        let (tokens, count, dir) = (issued.clone(), requests.clone(), dir.to_path_buf());
        let own = Arc::new(Mutex::new(String::new()));
        let own_addr = own.clone();
        let addr = server::serve(move |req| {
            let me = own_addr.lock().unwrap().clone();
            handle(
                req,
                tokens.clone(),
                count.clone(),
                public.clone(),
                dir.clone(),
                me,
            )
        });
        *own.lock().unwrap() = addr.clone();
        FakeGoogle {
            addr,
            issued,
            requests,
            private_key: std::fs::read_to_string(key).unwrap(),
        }
    }

    /// The service-account JSON key, as downloaded from the console.
    pub fn key_json(&self) -> String {
        json!({
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": "0123456789abcdef",
            "private_key": self.private_key,
            "client_email": CLIENT_EMAIL,
            "client_id": "1234567890",
            "token_uri": format!("http://{}/token", self.addr),
        })
        .to_string()
    }

    pub fn token_requests(&self) -> usize {
        *self.requests.lock().unwrap()
    }
}

fn error(status: u16, why: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(json!({"error": why}).to_string()))
        .unwrap()
}

fn b64url(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .unwrap_or_default()
}

/// `application/x-www-form-urlencoded` value decoding.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(
    req: Request<Incoming>,
    issued: Arc<Mutex<HashSet<String>>>,
    requests: Arc<Mutex<usize>>,
    public: PathBuf,
    dir: PathBuf,
    me: String,
) -> Response<Body> {
    *requests.lock().unwrap() += 1;
    if req.method() != "POST" || req.uri().path() != "/token" {
        return error(404, "not_found");
    }
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let form: Vec<(String, String)> = String::from_utf8_lossy(&body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if field("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
        return error(400, "unsupported_grant_type");
    }
    let assertion = field("assertion");
    let parts: Vec<&str> = assertion.split('.').collect();
    if parts.len() != 3 {
        return error(400, "invalid_grant: not a JWT");
    }
    let header: Value = serde_json::from_slice(&b64url(parts[0])).unwrap_or_default();
    let claims: Value = serde_json::from_slice(&b64url(parts[1])).unwrap_or_default();
    if header["alg"] != "RS256" {
        return error(400, "invalid_grant: alg");
    }
    // The signature is checked by openssl against the account's public key.
    let n = issued.lock().unwrap().len();
    let (data, sig) = (
        dir.join(format!("jwt-{n}.data")),
        dir.join(format!("jwt-{n}.sig")),
    );
    std::fs::write(&data, format!("{}.{}", parts[0], parts[1])).unwrap();
    std::fs::write(&sig, b64url(parts[2])).unwrap();
    let verified = Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            public.to_str().unwrap(),
            "-signature",
            sig.to_str().unwrap(),
            data.to_str().unwrap(),
        ])
        .output()
        .unwrap()
        .status
        .success();
    if !verified {
        return error(400, "invalid_grant: Invalid JWT Signature.");
    }
    let now = jiff::Timestamp::now().as_second();
    let claims_ok = claims["iss"] == CLIENT_EMAIL
        && claims["aud"] == format!("http://{me}/token")
        && claims["scope"]
            .as_str()
            .is_some_and(|s| s.contains("https://www.googleapis.com/auth/cloud-platform"))
        && claims["exp"].as_i64().is_some_and(|exp| exp > now);
    if !claims_ok {
        return error(400, &format!("invalid_grant: claims {claims}"));
    }
    let token = format!("ya29.fake-access-token-{n}");
    issued.lock().unwrap().insert(token.clone());
    let answer = json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"});
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(full(answer.to_string()))
        .unwrap()
}

//! `gcrsync serve` as users run it (the real binary on a loopback port, stopped with
//! SIGTERM), Debian's `skopeo` as its client, and a self-signed certificate for TLS.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A running `gcrsync serve`; SIGTERM and wait on drop.
pub struct Serve {
    pub addr: String,
    pub cache: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    _dir: TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Serve {
    /// Starts `gcrsync serve --listen 127.0.0.1:PORT --cache-dir DIR/cache ARGS`.
    pub fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        Self::start_in(dir, cache, args)
    }

    /// The same on an existing cache directory (a restart).
    pub fn restart(&mut self, args: &[&str]) -> Self {
        self.stop();
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, self.cache.clone(), args)
    }

    fn start_in(dir: TempDir, cache: PathBuf, args: &[&str]) -> Self {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = dir.path().join("serve.log");
        let child = super::gcrsync(dir.path())
            .arg("serve")
            .args(["--listen", &addr, "--cache-dir"])
            .arg(&cache)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start gcrsync serve");
        let mut serve = Serve {
            addr,
            cache,
            child: Some(child),
            log,
            _dir: dir,
        };
        serve.wait_ready();
        serve
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("gcrsync serve exited with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        panic!(
            "gcrsync serve did not listen on {}:\n{}",
            self.addr,
            self.log()
        );
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The cached blob files (hex digests).
    pub fn cached_blobs(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.cache.join("blobs/sha256"))
            .map(|d| {
                d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Files left in the cache's temporary directory.
    pub fn leftovers(&self) -> usize {
        std::fs::read_dir(self.cache.join("tmp")).map_or(0, |d| d.count())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `skopeo ARGS` (no signature policy needed for tests), its output echoed on failure.
pub fn skopeo(args: &[&str]) -> Output {
    let output = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("skopeo is needed for the serve tests (apt-get install skopeo)");
    if !output.status.success() {
        eprintln!(
            "skopeo {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

/// `skopeo copy --all --preserve-digests` of `image` (`HOST/REPO:TAG`, plain HTTP) into a
/// `dir:` layout at `dir` (which keeps manifests byte for byte).
pub fn pull(image: &str, dir: &Path) -> Output {
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{image}"),
        &format!("dir:{}", dir.display()),
    ])
}

/// What a `dir:` layout holds: the top manifest's digest, and the digest of every blob
/// and child manifest (each computed from the bytes written).
pub fn layout_digests(dir: &Path) -> (String, Vec<String>) {
    let top = super::images::digest_of(&std::fs::read(dir.join("manifest.json")).unwrap());
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".manifest.json") || name == "manifest.json" {
            all.push(super::images::digest_of(&std::fs::read(&path).unwrap()));
        } else if name.len() == 64 {
            assert_eq!(
                super::images::digest_of(&std::fs::read(&path).unwrap()),
                format!("sha256:{name}"),
                "blob {name} intact"
            );
            all.push(format!("sha256:{name}"));
        }
    }
    (top, all)
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is needed for the TLS tests");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA and a certificate for 127.0.0.1 it signed, in `dir`: (ca.pem, cert.pem,
/// key.pem).
pub fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=serve test CA",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "key.pem",
        "-out",
        "cert.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(dir, &csr);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "cert.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

/// Pushes `team/app:1` to `registry` with two random layers of `size` bytes each:
/// (the layers, their digests).
#[allow(dead_code)] // not every test binary uses it
pub async fn two_layer_image(
    registry: &super::TestRegistry,
    size: usize,
) -> ([Vec<u8>; 2], [String; 2]) {
    let layers = [
        super::images::random_bytes(size),
        super::images::random_bytes(size),
    ];
    let digests = layers.clone().map(|l| super::images::digest_of(&l));
    super::Pusher::new(&registry.addr)
        .image("team/app", "1", super::Format::Oci, "amd64", &layers)
        .await;
    (layers, digests)
}

/// An upstream whose one image `team/app:1` has a random layer of `size` bytes, served
/// through a fault proxy that trickles its first download (one frame per `frame`), so
/// clients can arrive while that download is in flight: (registry, proxy, layer, digest).
#[allow(dead_code)] // not every test binary uses it
pub async fn trickled_upstream(
    size: usize,
    frame: Duration,
) -> (
    super::TestRegistry,
    super::faults::FaultProxy,
    Vec<u8>,
    String,
) {
    let registry = super::TestRegistry::start();
    let layer = super::images::random_bytes(size);
    let digest = super::images::digest_of(&layer);
    super::Pusher::new(&registry.addr)
        .image(
            "team/app",
            "1",
            super::Format::Oci,
            "amd64",
            std::slice::from_ref(&layer),
        )
        .await;
    let upstream = super::faults::FaultProxy::start(&registry.addr);
    upstream.inject(super::faults::Rule {
        method: "GET",
        path_contains: digest.clone(),
        times: 1,
        fault: super::faults::Fault::Trickle(frame),
    });
    (registry, upstream, layer, digest)
}

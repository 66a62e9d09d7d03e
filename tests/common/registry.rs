//! A real CNCF distribution registry (`docker-registry`) on a free loopback port, with its
//! access log kept for counting requests. Missing binary = loud failure, never a skip.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A running registry; killed on drop.
pub struct TestRegistry {
    pub addr: String,
    child: Child,
    log: PathBuf,
    _dir: TempDir,
}

/// One access-log line: method, path (with query), status.
#[derive(Debug, Clone)]
pub struct Access {
    pub method: String,
    pub path: String,
    pub status: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn binary() -> PathBuf {
    let path = std::env::var_os("GCRSYNC_TEST_REGISTRY")
        .map_or_else(|| PathBuf::from("/usr/bin/docker-registry"), PathBuf::from);
    assert!(
        path.exists(),
        "{} not found: integration tests need CNCF distribution (apt-get install docker-registry), see .ci/run",
        path.display()
    );
    path
}

impl TestRegistry {
    /// Starts a registry; `extra` is appended to its YAML config.
    pub fn start_with(extra: &str) -> Self {
        Self::start_configured(extra, "")
    }

    /// Starts a registry serving HTTPS with this certificate and key (PEM files).
    pub fn start_tls(cert: &Path, key: &Path) -> Self {
        Self::start_configured(
            "",
            &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ),
        )
    }

    /// Starts a registry with deletes disabled (distribution's default): DELETE answers
    /// 405 `UNSUPPORTED`.
    pub fn start_without_delete() -> Self {
        Self::start_full("", "", false)
    }

    fn start_configured(extra: &str, http_extra: &str) -> Self {
        Self::start_full(extra, http_extra, true)
    }

    fn start_full(extra: &str, http_extra: &str, delete: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: {delete}\nhttp:\n  addr: 127.0.0.1:{port}\n{http_extra}{extra}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = dir.path().join("access.log");
        let child = Command::new(binary())
            .arg("serve")
            .arg(&config)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("error.log")).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let registry = TestRegistry {
            addr: format!("127.0.0.1:{port}"),
            child,
            log,
            _dir: dir,
        };
        registry.wait_ready();
        registry
    }

    pub fn start() -> Self {
        Self::start_with("")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry did not start on {}", self.addr);
    }

    pub fn data_dir(&self) -> &Path {
        self._dir.path()
    }

    /// Every request logged so far.
    pub fn accesses(&self) -> Vec<Access> {
        // The access log is written line by line; give the last one a moment to land.
        std::thread::sleep(Duration::from_millis(100));
        let file = std::fs::File::open(&self.log).unwrap();
        BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| {
                let request = line.split('"').nth(1)?;
                let mut parts = request.split(' ');
                let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
                let status = line
                    .split('"')
                    .nth(2)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some(Access {
                    method,
                    path,
                    status,
                })
            })
            .collect()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A registry requiring `user:password` (distribution's htpasswd Basic auth, the bcrypt
/// file made with apache2-utils' htpasswd; one file per user, so several fit in `dir`).
pub fn protected(dir: &Path, user: &str, password: &str) -> TestRegistry {
    let file = dir.join(format!("htpasswd-{user}"));
    let out = Command::new("htpasswd")
        .args(["-Bbc", file.to_str().unwrap(), user, password])
        .output()
        .expect("htpasswd (apache2-utils) is needed; see .ci/run");
    assert!(out.status.success());
    TestRegistry::start_with(&format!(
        "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
        file.display()
    ))
}

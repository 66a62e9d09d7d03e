//! The benchmark's gcr.io: the test suite's gcr front (tests/common/gcr.rs: gcr's token
//! endpoint, `child` lists and `manifest` maps, tokens that open only their scopes) and
//! fake Google OAuth (tests/common/google.rs: verifies the service account's signed JWT),
//! run as a process in front of a real distribution registry, so `scripts/bench.sh` times
//! gcrsync against the very stand-ins the tests prove it against. Built as a cargo example
//! (dev-dependencies only; never part of the gcrsync binary).
//!
//! Usage: bench-gcr UPSTREAM_HOST:PORT DIR — writes DIR/addr (the front's host:port, last),
//! DIR/key.json (the service-account key) and appends every request the front answers to
//! DIR/requests.log as `"METHOD PATH"` lines (challenged ones as `"METHOD challenged PATH"`).
//! BENCH_GCR_REFERRERS=1 serves the OCI 1.1 referrers API (tests/common/gcr/referrers.rs).

#![allow(dead_code)]

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

// The test harness modules the fakes need, compiled from the test suite's own files (at
// the crate root, where their `super::` finds one another).
#[path = "../../tests/common/faults.rs"]
mod faults;
#[path = "../../tests/common/gcr.rs"]
mod gcr;
#[path = "../../tests/common/google.rs"]
mod google;
#[path = "../../tests/common/images.rs"]
mod images;
#[path = "../../tests/common/registry.rs"]
mod registry;
#[path = "../../tests/common/server.rs"]
mod server;
#[path = "../../tests/common/storage.rs"]
mod storage;

use images::{Format, Pusher};
use registry::TestRegistry;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [upstream, dir] = args.as_slice() else {
        eprintln!("usage: bench-gcr UPSTREAM_HOST:PORT DIR");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("create DIR");
    let google = google::FakeGoogle::start(&dir);
    let gcr = gcr::FakeGcr::start(upstream, false);
    gcr.trust_google(google.issued.clone());
    // Artifact Registry (which serves gcr.io now) has the OCI 1.1 referrers API; the bench
    // turns it on with BENCH_GCR_REFERRERS=1 (off: the front forwards, distribution 404s).
    if std::env::var("BENCH_GCR_REFERRERS").is_ok_and(|v| v == "1") {
        gcr.referrers_api(100);
    }
    std::fs::write(dir.join("key.json"), google.key_json()).expect("write key.json");
    std::fs::write(dir.join("addr"), &gcr.addr).expect("write addr");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("requests.log"))
        .expect("open requests.log");
    // The front keeps its log in memory; the bench reads it as a file, like the registries'.
    let mut written = 0;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let entries = gcr.log();
        for (method, path) in &entries[written.min(entries.len())..] {
            writeln!(log, "\"{method} {path}\"").expect("write requests.log");
        }
        written = entries.len();
    }
}

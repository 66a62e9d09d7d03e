//! Counters for `/metrics`, in the Prometheus text format.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the proxy has done since it started.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests answered from the cache.
    pub hits: AtomicU64,
    /// Requests that needed an upstream fetch.
    pub misses: AtomicU64,
    /// Requests that joined a fetch already in flight.
    pub coalesced: AtomicU64,
    /// Requests sent upstream (HEAD and GET).
    pub upstream_requests: AtomicU64,
    /// Body bytes received from upstreams.
    pub upstream_bytes: AtomicU64,
    /// Body bytes sent to clients.
    pub served_bytes: AtomicU64,
    /// Cached tags served while the upstream failed.
    pub stale: AtomicU64,
    /// Requests refused for the per-client cap.
    pub throttled: AtomicU64,
    /// Requests answered.
    pub requests: AtomicU64,
}

/// Adds one.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n`.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// The exposition text; `cache_bytes` is the cache's current size.
    pub fn render(&self, cache_bytes: u64) -> String {
        let rows: [(&str, &str, &str, u64); 10] = [
            (
                "gcrsync_serve_requests_total",
                "counter",
                "Requests answered.",
                self.get(&self.requests),
            ),
            (
                "gcrsync_serve_cache_hits_total",
                "counter",
                "Manifests and blobs answered from the cache.",
                self.get(&self.hits),
            ),
            (
                "gcrsync_serve_cache_misses_total",
                "counter",
                "Manifests and blobs fetched from an upstream.",
                self.get(&self.misses),
            ),
            (
                "gcrsync_serve_coalesced_total",
                "counter",
                "Requests that joined an upstream fetch in flight.",
                self.get(&self.coalesced),
            ),
            (
                "gcrsync_serve_upstream_requests_total",
                "counter",
                "Requests sent to upstreams.",
                self.get(&self.upstream_requests),
            ),
            (
                "gcrsync_serve_upstream_bytes_total",
                "counter",
                "Body bytes received from upstreams.",
                self.get(&self.upstream_bytes),
            ),
            (
                "gcrsync_serve_served_bytes_total",
                "counter",
                "Body bytes sent to clients.",
                self.get(&self.served_bytes),
            ),
            (
                "gcrsync_serve_stale_tags_total",
                "counter",
                "Cached tags and tag listings served while the upstream failed.",
                self.get(&self.stale),
            ),
            (
                "gcrsync_serve_throttled_total",
                "counter",
                "Requests refused by the per-client limit.",
                self.get(&self.throttled),
            ),
            (
                "gcrsync_serve_cache_bytes",
                "gauge",
                "Bytes of content in the cache.",
                cache_bytes,
            ),
        ];
        let mut text = String::new();
        for (name, kind, help, value) in rows {
            text.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        }
        text
    }

    fn get(&self, counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

//! Peak RSS of the metadata step at 15,000 records (300 images × 50 tags), in a local
//! metadata directory: the first run's bulk record of 15,000 adopted tags, then batches of
//! `--commit-every 50` copies on top of them, then a batch of one failure.
//!
//! `cargo run --example metadata_rss` (Linux: it resets the peak through
//! /proc/self/clear_refs before each step and reads VmHWM after it).

use gcrsync::metadata::Recorder;
use gcrsync::metadata::local::LocalStore;
use gcrsync::metadata::record::{Outcome, TagRecord};
use gcrsync::metadata::render::{Renderer, TemplateFiles};

fn status(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs `step` with the peak reset before it; prints RSS before it and the process's peak.
async fn measure<F: std::future::Future<Output = ()>>(what: &str, step: F) {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status("VmRSS:");
    let started = std::time::Instant::now();
    step.await;
    println!(
        "{what}: RSS before {:.1} MiB, peak {:.1} MiB (+{:.1}), {:.2?}",
        before as f64 / 1024.0,
        status("VmHWM:") as f64 / 1024.0,
        status("VmHWM:").saturating_sub(before) as f64 / 1024.0,
        started.elapsed()
    );
}

fn synced(i: usize, tag: usize, seed: usize, at: &str, copied: bool) -> (usize, Outcome) {
    let image = format!("image-{i:03}");
    let outcome = Outcome::Synced {
        target: format!("docker.io/myuser/{image}"),
        image,
        tag: format!("v1.{tag}.0"),
        record: TagRecord {
            deleted_upstream_at: None,
            pruned_at: None,
            digest: Some(format!("sha256:{seed:064x}").parse().unwrap()),
            dropped_platforms: vec![],
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
            referrers: vec![],
            referrer_tags: None,
            source_digest: None,
            synced_at: at.into(),
        },
        previous: None,
        copied,
    };
    (0, outcome)
}

fn recorder(dir: &std::path::Path) -> Recorder<LocalStore> {
    Recorder::new(
        LocalStore::new(dir.to_path_buf()),
        "",
        Renderer::new(&TemplateFiles::default()).unwrap(),
        vec![(
            "gcr.io/google-containers".parse().unwrap(),
            "docker.io/myuser".parse().unwrap(),
        )],
        jiff::tz::TimeZone::UTC,
    )
}

/// One step, in a process of its own so that what the allocator kept from an earlier step
/// does not hide this one's peak.
async fn step(name: &str, dir: &std::path::Path) {
    let recorder = recorder(dir);
    let now = jiff::Timestamp::now();
    let later = "2026-11-23T10:00:00Z";
    match name {
        "bulk" => {
            let adopted: Vec<_> = (0..300)
                .flat_map(|i| (0..50).map(move |t| (i, t)))
                .map(|(i, t)| synced(i, t, i * 100 + t, "2026-11-22T10:00:00Z", false))
                .collect();
            measure("bulk record of 15,000 adopted tags (6 commits)", async {
                recorder.commit_bulk(&adopted, now).await.unwrap();
            })
            .await;
        }
        "batches" => {
            measure("20 batches of 50 copies onto 15,000 records", async {
                for batch in 0..20 {
                    let copies: Vec<_> = (0..50)
                        .map(|t| synced(batch, t, 900_000 + batch * 100 + t, later, true))
                        .collect();
                    recorder.commit(&copies, now).await.unwrap();
                }
            })
            .await;
        }
        _ => {
            measure("a batch of one failure onto 15,000 records", async {
                let failed = Outcome::Failed {
                    image: "image-100".into(),
                    tag: "v1.0.0".into(),
                    error: "HTTP 500".into(),
                    at: later.into(),
                };
                recorder.commit(&[(0, failed)], now).await.unwrap();
            })
            .await;
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, name, dir] = args.as_slice() {
        return step(name, std::path::Path::new(dir)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    for name in ["bulk", "batches", "failure"] {
        let status = std::process::Command::new(&args[0])
            .args([name, dir.path().to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success(), "{name}: {status}");
    }
    let ns = dir.path().join("gcr.io/google-containers");
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    println!(
        "files: images.json {} bytes, README.md {} bytes, image-000.md {} bytes, CHANGELOG.md {} bytes",
        size(&ns.join("images.json")),
        size(&ns.join("README.md")),
        size(&ns.join("image-000.md")),
        size(&dir.path().join("CHANGELOG.md")),
    );
}

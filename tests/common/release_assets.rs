//! Release assets as release.yml publishes them, made from the built binary: one
//! `gcrsync-<target>.tar.gz` per target of its matrix and `SHA256SUMS` made with its own
//! command; kept under the target dir while the binary is unchanged. And release.yml's
//! publish step itself, run over a repository's tags with a fake `gh` and `git`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The targets of release.yml's build matrix.
pub fn release_targets() -> Vec<String> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".github/workflows/release.yml"),
    )
    .unwrap();
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    yaml["jobs"]["build"]["strategy"]["matrix"]["include"]
        .as_sequence()
        .expect("release.yml has a build matrix")
        .iter()
        .map(|e| e["target"].as_str().unwrap().to_string())
        .collect()
}

/// Where published releases are kept while the built binary is unchanged, so that each
/// test does not pack ~10 MB archives again; older binaries' copies are removed.
fn cache() -> &'static Path {
    static CACHE: OnceLock<PathBuf> = OnceLock::new();
    CACHE.get_or_init(|| {
        let bin = Path::new(env!("CARGO_BIN_EXE_gcrsync"));
        let meta = std::fs::metadata(bin).unwrap();
        let stamp = meta
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let name = format!("releases-{}-{stamp}", meta.len());
        for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
            let old = entry.file_name().to_string_lossy().into_owned();
            if old.starts_with("releases-") && old != name {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = tmp.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// Makes `target` by filling a fresh directory beside it and renaming it into place, so
/// that tests running at the same time never see half of it.
fn once(target: &Path, fill: impl FnOnce(&Path)) {
    if target.exists() {
        return;
    }
    let staging = tempfile::tempdir_in(cache()).unwrap();
    fill(staging.path());
    let staging = staging.keep();
    if std::fs::rename(&staging, target).is_err() {
        // Another test made it first.
        std::fs::remove_dir_all(&staging).unwrap();
    }
    assert!(target.exists());
}

/// `tar -czf` of the built binary, stripped as the release profile strips it (smaller and
/// faster to pack).
fn base_archive() -> PathBuf {
    let archive = cache().join("base");
    once(&archive, |dir| {
        let copy = dir.join("gcrsync");
        std::fs::copy(env!("CARGO_BIN_EXE_gcrsync"), &copy).unwrap();
        // Without `strip` the archive is only bigger.
        let _ = Command::new("strip").arg(&copy).status();
        let tar = Command::new("tar")
            .arg("-czf")
            .arg(dir.join("gcrsync.tar.gz"))
            .arg("-C")
            .arg(dir)
            .arg("gcrsync")
            .status()
            .unwrap();
        assert!(tar.success());
        std::fs::remove_file(copy).unwrap();
    });
    archive.join("gcrsync.tar.gz")
}

/// A release archive distinct for every `variant`: the base archive followed by a second
/// gzip member of zero blocks (tar ignores what follows its end marker), so every version
/// and target has its own checksum while still holding exactly one file, `gcrsync`.
fn archive(variant: usize, to: &Path) {
    let mut bytes = std::fs::read(base_archive()).unwrap();
    let zeros = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(zeros.path(), vec![0u8; 512 * (variant + 1)]).unwrap();
    let gz = Command::new("gzip")
        .args(["-c", "-n"])
        .arg(zeros.path())
        .output()
        .unwrap();
    assert!(gz.status.success());
    bytes.extend_from_slice(&gz.stdout);
    std::fs::write(to, bytes).unwrap();
}

/// What release.yml's publish job uploads as the `index`th release: an archive per matrix
/// target and `SHA256SUMS`, made with its very command.
pub fn publish(index: usize) -> (BTreeMap<String, PathBuf>, BTreeMap<String, String>) {
    let targets = release_targets();
    let dir = cache().join(format!("release-{index}-{}", targets.join("+")));
    once(&dir, |dir| {
        for (t, target) in targets.iter().enumerate() {
            archive(index * 8 + t, &dir.join(format!("gcrsync-{target}.tar.gz")));
        }
        let sums = Command::new("bash")
            .args(["-c", "sha256sum gcrsync-*.tar.gz > SHA256SUMS"])
            .current_dir(dir)
            .status()
            .unwrap();
        assert!(sums.success());
    });
    let mut assets: BTreeMap<String, PathBuf> = targets
        .iter()
        .map(|t| format!("gcrsync-{t}.tar.gz"))
        .map(|name| (name.clone(), dir.join(name)))
        .collect();
    let text = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    let sums = text
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(sum, name)| (name.to_string(), sum.to_string()))
        .collect();
    assets.insert("SHA256SUMS".into(), dir.join("SHA256SUMS"));
    (assets, sums)
}

/// release.yml's publish step, run with a fake `gh` and `git` over a repository's tags:
/// returns the `gh` and `git` calls that change anything.
pub fn run_publish_step(tag: &str, existing: &[&str]) -> Vec<String> {
    let workflow: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".github/workflows/release.yml"),
        )
        .unwrap(),
    )
    .unwrap();
    let script = workflow["jobs"]["publish"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "publish")
        .expect("a publish step")["run"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let bin = super::runner::tools_without_rust(dir.path());
    std::os::unix::fs::symlink(which("sort"), bin.join("sort")).unwrap();
    let log = dir.path().join("calls");
    let tags = dir.path().join("tags");
    std::fs::write(&tags, format!("{}\n{tag}\n", existing.join("\n"))).unwrap();
    let fakes = [
        ("gh", "echo \"gh $*\" >>\"$LOG\"".to_string()),
        (
            "git",
            // `git tag -l PATTERN` lists matching tags; other calls are recorded.
            "if [ \"$1 $2\" = 'tag -l' ]; then while read -r t; do [[ \"$t\" != $3 ]] || echo \"$t\"; done <\"$TAGS\"; else echo \"git $*\" >>\"$LOG\"; fi".to_string(),
        ),
    ];
    for (name, body) in fakes {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/usr/bin/env bash\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    for target in release_targets() {
        std::fs::write(dir.path().join(format!("gcrsync-{target}.tar.gz")), &target).unwrap();
    }
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .env_clear()
        .env("PATH", &bin)
        .env("TAG", tag)
        .env("GITHUB_SHA", "c0ffee")
        .env("LOG", &log)
        .env("TAGS", &tags)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sums = std::fs::read_to_string(dir.path().join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), release_targets().len());
    // The shell expands gcrsync-*.tar.gz in name order.
    let mut assets: Vec<String> = release_targets()
        .iter()
        .map(|t| format!("gcrsync-{t}.tar.gz"))
        .collect();
    assets.sort();
    let uploads = format!(" {} SHA256SUMS", assets.join(" "));
    std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.replace(" --generate-notes", "").replace(&uploads, ""))
        .collect()
}

pub fn which(tool: &str) -> PathBuf {
    std::env::split_paths(&std::env::var("PATH").unwrap())
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap()
}

//! The GitHub Actions runner, as far as action.yml meets it: each step of the composite
//! action run with its `env:` evaluated from the inputs and the `github` context, the
//! runner's variables (`RUNNER_TEMP`, `GITHUB_ACTION_PATH`, ...), and `GITHUB_OUTPUT` and
//! `GITHUB_STEP_SUMMARY` files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub struct Runner {
    pub work: PathBuf,
    /// `github.*` values, e.g. `github.action_ref`; edit them to change what the step sees.
    pub context: BTreeMap<String, String>,
    /// Steps to run (all when empty), by id.
    pub only: Vec<String>,
}

impl Runner {
    /// Evaluates the `${{ … }}` expressions action.yml uses.
    fn eval(
        &self,
        value: &str,
        inputs: &BTreeMap<String, String>,
        steps: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> String {
        let mut out = value.to_string();
        while let Some(start) = out.find("${{") {
            let end = out[start..].find("}}").unwrap() + start;
            let expr = out[start + 3..end].trim().to_string();
            let resolved = if let Some(name) = expr.strip_prefix("inputs.") {
                inputs
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| panic!("action.yml reads undeclared input {name}"))
            } else if let Some(rest) = expr.strip_prefix("steps.") {
                let (step, output) = rest.split_once(".outputs.").unwrap();
                steps
                    .get(step)
                    .and_then(|o| o.get(output))
                    .cloned()
                    .unwrap_or_default()
            } else {
                self.context
                    .get(&expr)
                    .cloned()
                    .unwrap_or_else(|| panic!("unknown expression {expr}"))
            };
            out.replace_range(start..end + 2, &resolved);
        }
        out
    }

    /// Runs every step of action.yml; returns each step's output and its outputs file.
    pub fn run_action(
        &self,
        given: &[(&str, &str)],
        extra_env: &[(&str, &str)],
    ) -> Vec<(Output, BTreeMap<String, String>)> {
        self.run_action_watching(given, extra_env, |_, _| {})
    }

    /// [`Runner::run_action`], handing each running step's process to `watch` (by step
    /// id) before waiting for it: a test can cancel it the way the runner does.
    pub fn run_action_watching(
        &self,
        given: &[(&str, &str)],
        extra_env: &[(&str, &str)],
        mut watch: impl FnMut(&str, &mut Child),
    ) -> Vec<(Output, BTreeMap<String, String>)> {
        let action: serde_yaml::Value = serde_yaml::from_str(
            &std::fs::read_to_string(Path::new(ROOT).join("action.yml")).unwrap(),
        )
        .unwrap();
        let mut inputs = BTreeMap::new();
        for (name, spec) in action["inputs"].as_mapping().unwrap() {
            let default = spec["default"].as_str().unwrap_or("").to_string();
            inputs.insert(
                name.as_str().unwrap().to_string(),
                self.eval(&default, &BTreeMap::new(), &BTreeMap::new()),
            );
        }
        for (name, value) in given {
            assert!(inputs.contains_key(*name), "no input {name} in action.yml");
            inputs.insert(name.to_string(), value.to_string());
        }
        let summary = self.work.join("summary.md");
        let mut steps: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut results = Vec::new();
        for step in action["runs"]["steps"].as_sequence().unwrap() {
            let id = step["id"].as_str().unwrap().to_string();
            if !self.only.is_empty() && !self.only.contains(&id) {
                continue;
            }
            let output_file = self.work.join(format!("output-{id}"));
            std::fs::write(&output_file, "").unwrap();
            // As the runner runs `shell: bash`: the `run:` text in a script file, then
            // `bash --noprofile --norc -eo pipefail FILE`. (`bash -c` would exec a lone
            // command and hide that the runner signals only the shell's own process.)
            let script = self.work.join(format!("step-{id}.sh"));
            std::fs::write(&script, step["run"].as_str().unwrap()).unwrap();
            let mut command = Command::new("bash");
            command
                .args(["--noprofile", "--norc", "-eo", "pipefail"])
                .arg(&script)
                .env_clear();
            command
                .env("PATH", std::env::var("PATH").unwrap())
                .env("HOME", &self.work)
                .current_dir(&self.work);
            for (key, value) in [
                ("GITHUB_ACTIONS", "true"),
                ("RUNNER_OS", "Linux"),
                ("RUNNER_ARCH", "X64"),
                ("GITHUB_ACTION_PATH", ROOT),
                ("GITHUB_REPOSITORY", "owner/repo"),
            ] {
                command.env(key, value);
            }
            command
                .env("RUNNER_TEMP", self.work.join("tmp"))
                .env("GITHUB_OUTPUT", &output_file)
                .env("GITHUB_STEP_SUMMARY", &summary);
            for (key, value) in step["env"].as_mapping().unwrap() {
                command.env(
                    key.as_str().unwrap(),
                    self.eval(value.as_str().unwrap(), &inputs, &steps),
                );
            }
            command.envs(extra_env.iter().copied());
            let started = std::time::Instant::now();
            let mut child = command
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            watch(&id, &mut child);
            let out = child.wait_with_output().unwrap();
            let took = started.elapsed();
            eprintln!(
                "--- step {id}: {:?} in {took:?}\n{}\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let outputs: BTreeMap<String, String> = std::fs::read_to_string(&output_file)
                .unwrap()
                .lines()
                .filter_map(|l| {
                    l.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                })
                .collect();
            let failed = !out.status.success();
            steps.insert(id, outputs.clone());
            results.push((out, outputs));
            if failed {
                break;
            }
        }
        results
    }
}

/// A runner for the action as `uses: gcrsync/gcrsync@v1` on github.com, with no token.
pub fn runner(work: &Path) -> Runner {
    std::fs::create_dir_all(work.join("tmp")).unwrap();
    let context = BTreeMap::from([
        ("github.token".to_string(), String::new()),
        ("github.action_ref".to_string(), "v1".to_string()),
        (
            "github.action_repository".to_string(),
            "gcrsync/gcrsync".to_string(),
        ),
        (
            "github.server_url".to_string(),
            "https://github.com".to_string(),
        ),
        (
            "github.api_url".to_string(),
            "https://api.github.com".to_string(),
        ),
    ]);
    Runner {
        work: work.to_path_buf(),
        context,
        only: Vec::new(),
    }
}

/// What the install step and the any-CI line may use: a runner's base tools, no Rust.
pub const TOOLS: &[&str] = &[
    "bash",
    "sh",
    "env",
    "curl",
    "tar",
    "gzip",
    "sha256sum",
    "awk",
    "grep",
    "sed",
    "cut",
    "tr",
    "head",
    "tail",
    "mkdir",
    "rm",
    "cp",
    "chmod",
    "cat",
    "dirname",
    "uname",
    "mktemp",
];

/// A directory of symlinks to `TOOLS` (found on this machine's PATH), for a `PATH` on which
/// neither cargo nor rustc can be found.
pub fn tools_without_rust(dir: &Path) -> PathBuf {
    let bin = dir.join("runner-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = std::env::var("PATH").unwrap();
    for tool in TOOLS {
        let found = std::env::split_paths(&path)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{tool} is not on PATH"));
        std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
    }
    bin
}

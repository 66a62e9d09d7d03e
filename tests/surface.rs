//! The option surface cannot drift: README's option table, `.env.example` and action.yml's
//! inputs and `env:` map are generated from the clap definitions by `gcrsync
//! generate-docs`; the committed files must be what it generates, and what it generates
//! must be a valid action (every option an input mapped to its variable) and a valid `.env`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use gcrsync::docs;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const FILES: [&str; 3] = ["README.md", ".env.example", "action.yml"];

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap()
}

#[test]
fn the_committed_docs_are_what_generate_docs_writes() {
    let out = common::gcrsync(Path::new(ROOT))
        .args(["generate-docs", "--check", "--root", ROOT])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn generate_docs_finds_and_repairs_stale_files() {
    let dir = tempfile::tempdir().unwrap();
    for file in FILES {
        std::fs::copy(Path::new(ROOT).join(file), dir.path().join(file)).unwrap();
    }
    let stale = [
        (
            "README.md",
            "| `--retries` | `GCRSYNC_RETRIES` | `4` |",
            "| `--retries` | `GCRSYNC_RETRIES` | `3` |",
        ),
        (".env.example", "# GCRSYNC_SHARD='1/1'\n", ""),
        (
            "action.yml",
            "GCRSYNC_PROXY: ${{ inputs.proxy }}",
            "GCRSYNC_PROXY: ${{ inputs.proxies }}",
        ),
    ];
    for (file, from, to) in stale {
        let path = dir.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} lacks {from:?}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }
    let root = dir.path().to_str().unwrap();
    let run = |check: bool| {
        let mut args = vec!["generate-docs", "--root", root];
        if check {
            args.push("--check");
        }
        common::gcrsync(dir.path()).args(args).output().unwrap()
    };
    let checked = run(true);
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("out of date with src/cli.rs: README.md, .env.example, action.yml"),
        "{stderr}"
    );
    assert!(run(false).status.success());
    for file in FILES {
        let repaired = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert_eq!(repaired, read(file), "{file} after generate-docs");
    }
    assert!(run(true).status.success());
    // Without its markers a file is refused, never rewritten wholesale.
    let readme = dir.path().join("README.md");
    let text = std::fs::read_to_string(&readme).unwrap();
    std::fs::write(&readme, text.replace("<!-- END options -->\n", "")).unwrap();
    let refused = run(false);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("README.md: no marker line \"<!-- END options -->\""),
        "{stderr}"
    );
}

#[test]
fn every_option_is_an_action_input_mapped_to_its_variable() {
    let action: serde_yaml::Value = serde_yaml::from_str(&read("action.yml")).unwrap();
    let inputs = action["inputs"].as_mapping().unwrap();
    let run_step = action["runs"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "run")
        .unwrap();
    let env: BTreeMap<String, String> = run_step["env"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().into(), v.as_str().unwrap().into()))
        .collect();
    let options = docs::options();
    assert!(options.len() > 40, "{}", options.len());
    for o in &options {
        let input = &inputs[o.long.as_str()];
        assert!(
            input["description"].as_str().is_some_and(|d| d.len() > 10),
            "input {} needs a description",
            o.long
        );
        // Empty (unset) by default: the binary applies its own default, and an input that
        // always set its variable would override the top level of a `config` file.
        let default = input["default"].as_str().unwrap_or("");
        match o.long.as_str() {
            "github-token" => assert_eq!(default, "${{ github.token }}"),
            _ => assert_eq!(default, "", "{}", o.long),
        }
        if let Some(d) = o.default.as_deref().filter(|d| !d.is_empty()) {
            let description = input["description"].as_str().unwrap_or("");
            assert!(
                description.ends_with(&format!("(default: {d})")),
                "{}: {description}",
                o.long
            );
        }
        assert_eq!(
            env.get(&o.env).map(String::as_str),
            Some(format!("${{{{ inputs.{} }}}}", o.long).as_str()),
            "input {} → {}",
            o.long,
            o.env
        );
    }
    let action_only = ["command", "version"];
    for (name, _) in inputs {
        let name = name.as_str().unwrap();
        assert!(
            action_only.contains(&name) || options.iter().any(|o| o.long == name),
            "input {name} is not a CLI option"
        );
    }
    // Inputs reach the binary only through env: no expression in any run: text.
    for step in action["runs"]["steps"].as_sequence().unwrap() {
        assert!(
            !step["run"].as_str().unwrap().contains("${{"),
            "an expression in run: of step {:?}",
            step["id"]
        );
    }
}

#[test]
fn the_env_example_sets_nothing_and_uncommented_is_a_valid_env_file_with_every_default() {
    let path = Path::new(ROOT).join(".env.example");
    // As shipped it sets no variable: a set one would override a --config file's top level.
    let parsed: Vec<(String, String)> = dotenvy::from_path_iter(&path)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(parsed, []);
    let dir = tempfile::tempdir().unwrap();
    let uncommented: String = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| {
            l.strip_prefix("# GCRSYNC_")
                .map_or(l.to_string(), |v| format!("GCRSYNC_{v}"))
        })
        .map(|l| l + "\n")
        .collect();
    std::fs::write(dir.path().join(".env"), uncommented).unwrap();
    let parsed: BTreeMap<String, String> = dotenvy::from_path_iter(dir.path().join(".env"))
        .unwrap()
        .map(Result::unwrap)
        .filter(|(_, v)| !v.is_empty())
        .collect();
    for o in docs::options() {
        let default = o.default.clone().filter(|d| !d.is_empty());
        assert_eq!(parsed.get(&o.env), default.as_ref(), "{}", o.env);
    }
    assert_eq!(parsed["GCRSYNC_NAME_TEMPLATE"], "{{ image }}");
}

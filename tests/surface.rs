//! The option surface cannot drift: every CLI option is an action.yml input with the same
//! default mapped to the same variable, a row of the README's option table, and a line of
//! `.env.example` (which must parse as a `.env`).

use std::collections::BTreeMap;
use std::path::Path;

use clap::CommandFactory;
use gcrsync::cli::Cli;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// (long name, env var, default) of every visible option that has a variable.
fn cli_options() -> Vec<(String, String, String)> {
    Cli::command()
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| {
            let env = a.get_env()?.to_str()?.to_string();
            let default = a
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(",");
            Some((a.get_long()?.to_string(), env, default))
        })
        .collect()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap()
}

#[test]
fn every_option_is_an_action_input_with_the_same_default_and_variable() {
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
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_string(),
                v.as_str().unwrap().to_string(),
            )
        })
        .collect();
    let options = cli_options();
    assert!(options.len() > 40, "{}", options.len());
    for (long, var, default) in &options {
        let input = &inputs[long.as_str()];
        assert!(input.is_mapping(), "--{long} has no action input");
        assert!(
            input["description"].as_str().is_some_and(|d| d.len() > 10),
            "input {long} needs a description"
        );
        let action_default = input["default"].as_str().unwrap_or("");
        if long == "github-token" {
            assert_eq!(
                action_default, "${{ github.token }}",
                "the workflow's token is the action's default"
            );
        } else {
            assert_eq!(action_default, default, "default of input {long}");
        }
        assert_eq!(
            env.get(var).map(String::as_str),
            Some(format!("${{{{ inputs.{long} }}}}").as_str()),
            "input {long} → {var}"
        );
    }
    let action_only = ["command", "version"];
    for (name, _) in inputs {
        let name = name.as_str().unwrap();
        assert!(
            action_only.contains(&name) || options.iter().any(|(l, _, _)| l == name),
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
fn every_option_is_in_the_readme_and_the_env_example() {
    let readme = read("README.md");
    let table = readme
        .split("## Options")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let example = read(".env.example");
    for (long, var, default) in cli_options() {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| `--{long}` |")))
            .unwrap_or_else(|| panic!("README lacks a row for --{long}"));
        let default_cell = if default.is_empty() {
            "—".to_string()
        } else {
            format!("`{default}`")
        };
        assert!(
            row.contains(&format!("| `{var}` | {default_cell} |")),
            "README row of --{long} disagrees: {row}"
        );
        let line = format!("{var}='{default}'");
        assert!(
            example.contains(&line)
                || (default.is_empty() && example.contains(&format!("# {var}="))),
            ".env.example lacks {line}"
        );
    }
    // The example must be a valid .env once uncommented as shipped.
    let parsed: Vec<(String, String)> =
        dotenvy::from_path_iter(Path::new(ROOT).join(".env.example"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    assert!(
        parsed
            .iter()
            .any(|(k, v)| k == "GCRSYNC_NAME_TEMPLATE" && v == "{{ image }}"),
        "{parsed:?}"
    );
}

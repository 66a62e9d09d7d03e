//! `gcrsync generate-docs`: the README options table, `.env.example` and `action.yml`'s
//! inputs and `env:` map, generated from the one declaration of every option (the clap
//! definitions in `cli`: long name, variable, default, one line of help, seed aliases).
//! Each output replaces only the text between its marker lines, so the hand-written parts
//! of those files (the action's `command`/`version` inputs, its install step) stay.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::cli::Cli;

/// One option as the docs show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionDoc {
    /// The long flag without dashes; also the action input and the config-file key.
    pub long: String,
    /// The `GCRSYNC_*` variable.
    pub env: String,
    /// The default value as text (`None`: no default).
    pub default: Option<String>,
    /// The one line of help.
    pub help: String,
    /// Seed (latelee/gcrsync) spellings still accepted.
    pub aliases: Vec<String>,
}

/// The action input's default where it is not the CLI's: the workflow's own token.
const ACTION_DEFAULTS: &[(&str, &str)] = &[("github-token", "${{ github.token }}")];

/// Every visible option with a variable, in declaration order.
pub fn options() -> Vec<OptionDoc> {
    Cli::command()
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| {
            let default = a
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>();
            Some(OptionDoc {
                long: a.get_long()?.to_string(),
                env: a.get_env()?.to_str()?.to_string(),
                default: (!default.is_empty()).then(|| default.join(",")),
                help: a
                    .get_help()
                    .map(|h| h.to_string().replace('\n', " "))
                    .unwrap_or_default(),
                aliases: a
                    .get_all_aliases()
                    .unwrap_or_default()
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

/// A YAML single-quoted scalar.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn readme_table(options: &[OptionDoc]) -> String {
    let mut out = String::from("| option | variable | default | meaning |\n|---|---|---|---|\n");
    for o in options {
        let default = match o.default.as_deref() {
            None | Some("") => "—".to_string(),
            Some(d) => format!("`{d}`"),
        };
        let aliases = match o.aliases.as_slice() {
            [] => String::new(),
            [one] => format!(" (seed alias `--{one}`)"),
            many => format!(
                " (seed aliases {})",
                many.iter()
                    .map(|a| format!("`--{a}`"))
                    .collect::<Vec<_>>()
                    .join("/")
            ),
        };
        out += &format!(
            "| `--{}` | `{}` | {default} | {}{aliases} |\n",
            o.long,
            o.env,
            o.help.replace('|', "\\|")
        );
    }
    out
}

fn env_example(options: &[OptionDoc]) -> String {
    let mut out = String::new();
    for o in options {
        out += &format!("# --{}: {}\n", o.long, o.help);
        match &o.default {
            // Commented out: the binary has the same default, and a set variable would
            // override a --config file's top level. Single quotes: dotenvy takes the
            // text verbatim (`{{ image }}` included).
            Some(d) => out += &format!("# {}='{}'\n\n", o.env, d),
            None => out += &format!("# {}=\n\n", o.env),
        }
    }
    out
}

/// Inputs default to empty (unset): the binary applies its own default, and an input
/// that always set its variable would override a `config` file's top level.
fn action_inputs(options: &[OptionDoc]) -> String {
    let mut out = String::new();
    for o in options {
        let default = ACTION_DEFAULTS
            .iter()
            .find(|(long, _)| *long == o.long)
            .map(|(_, d)| d.to_string())
            .unwrap_or_default();
        let help = match o.default.as_deref() {
            Some(d) if !d.is_empty() => format!("{} (default: {d})", o.help),
            _ => o.help.clone(),
        };
        out += &format!(
            "  {}:\n    description: {}\n    required: false\n    default: {}\n",
            o.long,
            quoted(&help),
            quoted(&default)
        );
    }
    out
}

fn action_env(options: &[OptionDoc]) -> String {
    options
        .iter()
        .map(|o| format!("        {}: ${{{{ inputs.{} }}}}\n", o.env, o.long))
        .collect()
}

/// One generated region: a file, its marker lines, and the text between them.
struct Region {
    file: &'static str,
    begin: &'static str,
    end: &'static str,
    text: String,
}

fn regions() -> Vec<Region> {
    let options = options();
    vec![
        Region {
            file: "README.md",
            begin: "<!-- BEGIN options: generated by `gcrsync generate-docs` from src/cli.rs -->\n",
            end: "<!-- END options -->\n",
            text: readme_table(&options),
        },
        Region {
            file: ".env.example",
            begin: "# BEGIN options: generated by `gcrsync generate-docs` from src/cli.rs\n",
            end: "# END options\n",
            text: env_example(&options),
        },
        Region {
            file: "action.yml",
            begin: "  # BEGIN inputs: generated by `gcrsync generate-docs` from src/cli.rs\n",
            end: "  # END inputs\n",
            text: action_inputs(&options),
        },
        Region {
            file: "action.yml",
            begin: "        # BEGIN env: generated by `gcrsync generate-docs` from src/cli.rs\n",
            end: "        # END env\n",
            text: action_env(&options),
        },
    ]
}

/// Why the docs could not be generated, or are not up to date.
#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    /// A file cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file lacks its marker lines.
    #[error("{file}: no marker line {marker:?}; put the BEGIN and END lines back")]
    NoMarker {
        /// The file.
        file: &'static str,
        /// The missing line.
        marker: String,
    },
    /// `--check`: the committed files differ from what the options declare.
    #[error(
        "out of date with src/cli.rs: {}; run `gcrsync generate-docs` and commit the result",
        .0.join(", ")
    )]
    Stale(Vec<&'static str>),
}

/// Replaces the region's text in `content`.
fn splice(content: &str, region: &Region) -> Result<String, DocsError> {
    let missing = |marker: &str| DocsError::NoMarker {
        file: region.file,
        marker: marker.trim_end().to_string(),
    };
    let start = content
        .find(region.begin)
        .ok_or_else(|| missing(region.begin))?
        + region.begin.len();
    let end = start
        + content[start..]
            .find(region.end)
            .ok_or_else(|| missing(region.end))?;
    Ok(format!(
        "{}{}{}",
        &content[..start],
        region.text,
        &content[end..]
    ))
}

/// Regenerates the files under `root`; with `check`, writes nothing and fails when a file
/// would change. Returns the files that changed (or would).
pub fn generate(root: &Path, check: bool) -> Result<Vec<&'static str>, DocsError> {
    let mut changed = Vec::new();
    let regions = regions();
    let mut files: Vec<&'static str> = regions.iter().map(|r| r.file).collect();
    files.dedup();
    for file in files {
        let path = root.join(file);
        let io = |source| DocsError::Io {
            path: path.clone(),
            source,
        };
        let before = std::fs::read_to_string(&path).map_err(io)?;
        let mut after = before.clone();
        for region in regions.iter().filter(|r| r.file == file) {
            after = splice(&after, region)?;
        }
        if after != before {
            changed.push(file);
            if !check {
                std::fs::write(&path, after).map_err(io)?;
            }
        }
    }
    if check && !changed.is_empty() {
        return Err(DocsError::Stale(changed));
    }
    Ok(changed)
}

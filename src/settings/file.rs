//! The `--config` YAML file, read and checked: global defaults and a list of `sources:`,
//! keyed by the long option names. Every value goes through the same checks as the flags
//! (`resolve`), and every message names the file, the line and the key. Secrets are never
//! written in the file: it names the variables that hold them (`source-password-env: VAR`).
//!
//! YAML is read with `saphyr` (maintained, pure Rust, YAML 1.2), whose marked nodes give
//! every key its line, which serde-based readers only give for syntax errors.

use clap::CommandFactory;
use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

use crate::cli::Cli;

/// One wrong thing in the file, with its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{}{message}", if *line == 0 { String::from(" ") } else { format!("{line}: ") })]
pub struct FileError {
    /// The file as given.
    pub file: String,
    /// 1-based line; 0 for the file as a whole (or a value set outside it).
    pub line: usize,
    /// What is wrong and what to do.
    pub message: String,
}

/// Every error found in a file (all of them, not only the first).
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct FileErrors(pub Vec<FileError>);

/// A value as written: one scalar, or a list (for repeatable options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A scalar, as text.
    One(String),
    /// A YAML list.
    List(Vec<String>),
}

/// `key: value` at a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The option's long name.
    pub key: String,
    /// Its line.
    pub line: usize,
    /// The value.
    pub value: Value,
}

/// A checked file: global entries, then one list of entries per source.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    /// Defaults for every source.
    pub globals: Vec<Entry>,
    /// Each source's own entries, with the line of its list item.
    pub sources: Vec<(usize, Vec<Entry>)>,
}

/// Options that only a source entry (or the globals) may set.
pub const PER_SOURCE: &[&str] = &[
    "source",
    "target",
    "images",
    "include-tags",
    "exclude-tags",
    "include-images",
    "exclude-images",
    "latest",
    "filter-preset",
    "name-template",
    "flatten-separator",
    "process-count",
    "platforms",
    "referrers",
    "referrers-recheck",
    "source-username",
    "target-username",
    "gcp-credentials",
    "docker-config",
];

/// Secret options: the file names the variable that holds them instead.
pub const SECRETS: &[&str] = &["source-password", "target-password", "github-token"];

/// Options that make no sense in a file.
const NOT_IN_FILE: &[&str] = &["config", "namespace", "verbose", "quiet"];

fn option_names() -> Vec<String> {
    Cli::command()
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long().map(str::to_string))
        .filter(|l| !NOT_IN_FILE.contains(&l.as_str()))
        .collect()
}

/// The known key closest to `key`, when close enough to be a typo.
fn suggestion<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::levenshtein(key, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k.as_str())
}

fn scalar_text(node: &MarkedYaml) -> Option<String> {
    match &node.data {
        YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
        YamlData::Value(Scalar::Integer(i)) => Some(i.to_string()),
        YamlData::Value(Scalar::Boolean(b)) => Some(b.to_string()),
        YamlData::Value(Scalar::FloatingPoint(f)) => Some(f.to_string()),
        YamlData::Value(Scalar::Null) => Some(String::new()),
        _ => None,
    }
}

struct Reader<'a> {
    file: &'a str,
    known: Vec<String>,
    errors: Vec<FileError>,
}

impl Reader<'_> {
    fn error(&mut self, line: usize, message: impl Into<String>) {
        self.errors.push(FileError {
            file: self.file.to_string(),
            line,
            message: message.into(),
        });
    }

    /// The entries of one mapping; `source_level` limits the keys to [`PER_SOURCE`].
    fn entries(&mut self, node: &MarkedYaml, source_level: bool) -> Vec<Entry> {
        let mut out = Vec::new();
        let YamlData::Mapping(map) = &node.data else {
            self.error(node.span.start.line(), "expected `key: value` lines");
            return out;
        };
        for (k, v) in map {
            let line = k.span.start.line();
            let Some(key) = scalar_text(k) else {
                self.error(line, "a key must be an option name");
                continue;
            };
            if key == "sources" && !source_level {
                continue;
            }
            if let Some(var_key) = key.strip_suffix("-env")
                && (SECRETS.contains(&var_key) || var_key == "gcp-credentials")
            {
                if source_level && var_key == "github-token" {
                    self.error(
                        line,
                        format!("{key} applies to the whole run; set it at the top of the file"),
                    );
                    continue;
                }
                match scalar_text(v) {
                    Some(name)
                        if !name.is_empty()
                            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
                    {
                        out.push(Entry {
                            key,
                            line,
                            value: Value::One(name),
                        })
                    }
                    _ => self.error(
                        line,
                        format!("{key}: give the name of an environment variable"),
                    ),
                }
                continue;
            }
            if SECRETS.contains(&key.as_str()) {
                self.error(
                    line,
                    format!(
                        "{key}: a secret written in the file is refused; put it in an environment variable (an Actions secret) and write `{key}-env: VARIABLE`"
                    ),
                );
                continue;
            }
            if !self.known.contains(&key) {
                let hint = suggestion(&key, &self.known)
                    .map(|s| format!(" (did you mean \"{s}\"?)"))
                    .unwrap_or_default();
                self.error(line, format!("unknown key \"{key}\"{hint}"));
                continue;
            }
            if source_level && !PER_SOURCE.contains(&key.as_str()) {
                self.error(
                    line,
                    format!("{key} applies to the whole run; set it at the top of the file"),
                );
                continue;
            }
            let value = match &v.data {
                YamlData::Sequence(items) => {
                    let texts: Option<Vec<String>> = items.iter().map(scalar_text).collect();
                    match texts {
                        Some(t) => Value::List(t),
                        None => {
                            self.error(line, format!("{key}: a list of plain values is expected"));
                            continue;
                        }
                    }
                }
                _ => match scalar_text(v) {
                    Some(t) => Value::One(t),
                    None => {
                        self.error(line, format!("{key}: a plain value is expected"));
                        continue;
                    }
                },
            };
            if key == "gcp-credentials"
                && let Value::One(text) = &value
                && text.trim_start().starts_with('{')
            {
                self.error(
                    line,
                    "gcp-credentials: a key written in the file is refused; give the key file's path, or `gcp-credentials-env: VARIABLE`",
                );
                continue;
            }
            out.push(Entry { key, line, value });
        }
        out
    }
}

/// Reads and checks the structure of `text` (from `file`).
pub fn parse(file: &str, text: &str) -> Result<ConfigFile, FileErrors> {
    let fail = |line, message: String| {
        FileErrors(vec![FileError {
            file: file.to_string(),
            line,
            message,
        }])
    };
    let docs = MarkedYaml::load_from_str(text)
        .map_err(|e| fail(e.marker().line(), format!("not valid YAML: {}", e.info())))?;
    let Some(root) = docs.first() else {
        return Err(fail(
            1,
            "the file is empty; give at least `sources:`".into(),
        ));
    };
    let mut reader = Reader {
        file,
        known: option_names(),
        errors: Vec::new(),
    };
    let globals = reader.entries(root, false);
    let mut sources = Vec::new();
    match root.data.as_mapping_get("sources").map(|n| (&n.data, n)) {
        Some((YamlData::Sequence(items), _)) => {
            for item in items {
                let entries = reader.entries(item, true);
                if !entries.iter().any(|e| e.key == "source") {
                    reader.error(item.span.start.line(), "this source has no `source:`");
                }
                sources.push((item.span.start.line(), entries));
            }
        }
        Some((_, node)) => reader.error(node.span.start.line(), "sources: a list is expected"),
        None => {}
    }
    if reader.errors.is_empty() {
        Ok(ConfigFile { globals, sources })
    } else {
        Err(FileErrors(reader.errors))
    }
}

//! Where each value comes from, and the command line each source stands for. Precedence,
//! highest first: a source's own entry in the config file, a flag, a variable (the real
//! environment, then `.env`), the file's top level, the default. The merge is made on the
//! command line, so every value goes through clap and `resolve` exactly as a flag does.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use super::file::{Entry, FileError, Value};
use crate::cli::{Cli, Command};

/// Where one option's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A flag on the command line.
    Flag,
    /// A variable of the real environment.
    Env(String),
    /// A variable from the working directory's `.env`.
    DotEnv(String),
    /// The config file: a source's own entry (`own`) or its top level, at `line`; `via`
    /// names the variable a `*-env` key points to.
    File {
        /// The file as given.
        file: String,
        /// 1-based line.
        line: usize,
        /// Set by the source's own entry (not the file's top level).
        own: bool,
        /// The variable that holds the value (`*-env` keys).
        via: Option<String>,
    },
    /// The built-in default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => f.write_str("flag"),
            Origin::Env(var) => write!(f, "env {var}"),
            Origin::DotEnv(var) => write!(f, ".env {var}"),
            Origin::File {
                file,
                line,
                own,
                via,
            } => {
                let level = if *own { "source" } else { "top level" };
                match via {
                    Some(var) => write!(f, "file {file}:{line} ({level}), from env {var}"),
                    None => write!(f, "file {file}:{line} ({level})"),
                }
            }
            Origin::Default => f.write_str("default"),
        }
    }
}

/// How an option takes its value on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `--flag` alone (true or absent).
    Switch,
    /// `-v` repeated.
    Count,
    /// `--flag VALUE`.
    Value,
}

/// Every option's long name, id and kind, in declaration order.
fn arguments() -> Vec<(String, String, Kind, Option<String>)> {
    Cli::command()
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?.to_string();
            let kind = match a.get_action() {
                ArgAction::SetTrue => Kind::Switch,
                ArgAction::Count => Kind::Count,
                ArgAction::Set | ArgAction::Append => Kind::Value,
                _ => return None,
            };
            let env = a.get_env().and_then(|e| e.to_str()).map(str::to_string);
            Some((long, a.get_id().to_string(), kind, env))
        })
        .collect()
}

/// The options the user gave outside the file: flags (as command-line words) and
/// variables (read again by clap when a source's command line is parsed).
pub struct Given {
    /// `--long=value` words of every flag given.
    flags: Vec<(String, Vec<String>)>,
    /// The origin of every option given as a flag or a variable.
    origins: BTreeMap<String, Origin>,
    /// The command, with its own arguments.
    command: Option<Command>,
}

/// `(long, words, origin)` of one option in `matches`, when given there.
fn given_in(
    matches: &ArgMatches,
    (long, id, kind, env): &(String, String, Kind, Option<String>),
    dotenv: &HashSet<String>,
) -> Option<(Vec<String>, Origin)> {
    let origin = match matches.value_source(id)? {
        ValueSource::CommandLine => Origin::Flag,
        ValueSource::EnvVariable => {
            let var = env.clone().unwrap_or_default();
            match dotenv.contains(&var) {
                true => Origin::DotEnv(var),
                false => Origin::Env(var),
            }
        }
        _ => return None,
    };
    let words = match kind {
        Kind::Switch => match matches.get_flag(id) {
            true => vec![format!("--{long}")],
            false => Vec::new(),
        },
        Kind::Count => vec![format!("--{long}"); matches.get_count(id) as usize],
        Kind::Value => matches
            .get_raw(id)
            .into_iter()
            .flatten()
            .map(|v| format!("--{long}={}", v.to_string_lossy()))
            .collect(),
    };
    Some((words, origin))
}

impl Given {
    /// Reads `matches` (the real command line); `dotenv` names the variables `.env` set.
    pub fn new(cli: &Cli, matches: &ArgMatches, dotenv: &HashSet<String>) -> Given {
        let mut given = Given {
            flags: Vec::new(),
            origins: BTreeMap::new(),
            command: cli.command.clone(),
        };
        for arg in arguments() {
            if let Some((words, origin)) = given_in(matches, &arg, dotenv) {
                if origin == Origin::Flag {
                    given.flags.push((arg.0.clone(), words));
                }
                given.origins.insert(arg.0, origin);
            }
        }
        given
    }

    /// Where `long` came from, when given as a flag or a variable.
    pub fn origin(&self, long: &str) -> Option<&Origin> {
        self.origins.get(long)
    }
}

/// One source's command line, parsed: its options and where each value came from.
pub struct Merged {
    /// The options as clap parsed them (with the real command).
    pub cli: Cli,
    /// Every option with a value: (long, value as text, origin), in declaration order.
    pub values: Vec<(String, String, Origin)>,
}

impl Merged {
    /// Where `long` came from (`Origin::Default` when nobody set it).
    pub fn origin(&self, long: &str) -> Origin {
        self.values
            .iter()
            .find(|(l, _, _)| l == long)
            .map_or(Origin::Default, |(_, _, o)| o.clone())
    }

    /// The line of `long` in the file, when the file set it.
    pub fn line(&self, long: &str) -> Option<usize> {
        match self.origin(long) {
            Origin::File { line, .. } => Some(line),
            _ => None,
        }
    }
}

/// The file's layers for one source: the top level and the source's own entries.
pub struct FileLayers<'a> {
    /// The file as given (for messages).
    pub file: &'a str,
    /// Its top-level entries.
    pub globals: &'a [Entry],
    /// The source's own entries.
    pub own: &'a [Entry],
}

/// The words an entry stands for, or why it cannot be used. A `*-env` entry becomes the
/// value of the variable it names; unset, it is an error, or with `lenient` (checking a
/// file where the secrets are not at hand) a placeholder.
fn entry_words(
    entry: &Entry,
    kind: Kind,
    option: &str,
    env: &impl Fn(&str) -> Option<String>,
    lenient: bool,
) -> Result<Vec<String>, String> {
    let values = match (&entry.value, entry.key.strip_suffix("-env")) {
        (Value::One(var), Some(_)) => match env(var) {
            Some(secret) => vec![secret],
            // A key cannot be checked without it; a password only pairs with its user.
            None if lenient && option == "gcp-credentials" => return Ok(Vec::new()),
            None if lenient => vec![format!("<{var} unset>")],
            None => {
                return Err(format!(
                    "{}: the variable {var} is not set; set it (e.g. from an Actions secret) or remove the key",
                    entry.key
                ));
            }
        },
        (Value::One(v), None) => vec![v.clone()],
        (Value::List(vs), _) => vs.clone(),
    };
    match kind {
        Kind::Value => Ok(values
            .into_iter()
            .map(|v| format!("--{option}={v}"))
            .collect()),
        Kind::Switch | Kind::Count => match values.as_slice() {
            [v] if v == "true" => Ok(vec![format!("--{option}")]),
            [v] if v == "false" => Ok(Vec::new()),
            _ => Err(format!("{}: give true or false", entry.key)),
        },
    }
}

/// Merges the layers of one source into its command line and parses it. Errors name the
/// file's line; a value given as a flag or variable was parsed before and cannot fail.
pub fn merge(
    given: &Given,
    file: &FileLayers<'_>,
    env: &impl Fn(&str) -> Option<String>,
    lenient: bool,
) -> Result<Merged, Vec<FileError>> {
    let arguments = arguments();
    let mut words = vec!["gcrsync".to_string()];
    let mut origins: BTreeMap<String, Origin> = BTreeMap::new();
    let mut errors = Vec::new();
    for (long, _, kind, _) in &arguments {
        let of = |entries: &'_ [Entry]| {
            entries
                .iter()
                .find(|e| e.key == *long || e.key.strip_suffix("-env") == Some(long))
                .cloned()
        };
        let from_file = |entry: Entry, own: bool| {
            let via = match (&entry.value, entry.key.ends_with("-env")) {
                (Value::One(var), true) => Some(var.clone()),
                _ => None,
            };
            let origin = Origin::File {
                file: file.file.to_string(),
                line: entry.line,
                own,
                via,
            };
            (entry, origin)
        };
        let chosen = match (of(file.own), given.origin(long)) {
            (Some(entry), _) => Some(from_file(entry, true)),
            (None, Some(origin)) => {
                if let Some((_, flag_words)) = given.flags.iter().find(|(l, _)| l == long) {
                    words.extend(flag_words.iter().cloned());
                }
                origins.insert(long.clone(), origin.clone());
                None
            }
            (None, None) => of(file.globals).map(|e| from_file(e, false)),
        };
        if let Some((entry, origin)) = chosen {
            match entry_words(&entry, *kind, long, env, lenient) {
                Ok(more) => words.extend(more),
                Err(message) => errors.push(FileError {
                    file: file.file.to_string(),
                    line: entry.line,
                    message,
                }),
            }
            origins.insert(long.clone(), origin);
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let matches = Cli::command().try_get_matches_from(&words).map_err(|e| {
        let flag = e
            .get(clap::error::ContextKind::InvalidArg)
            .map(|a| a.to_string())
            .and_then(|a| {
                a.strip_prefix("--")
                    .map(|s| s.split([' ', '=']).next().unwrap_or(s).to_string())
            })
            .unwrap_or_default();
        let line = match origins.get(&flag) {
            Some(Origin::File { line, .. }) => *line,
            _ => 0,
        };
        let why = e.kind().as_str().unwrap_or("invalid value").to_lowercase();
        vec![FileError {
            file: file.file.to_string(),
            line,
            message: format!("{flag}: {why}"),
        }]
    })?;
    let mut cli = Cli::from_arg_matches(&matches).map_err(|e| {
        vec![FileError {
            file: file.file.to_string(),
            line: 0,
            message: e.kind().as_str().unwrap_or("invalid value").to_string(),
        }]
    })?;
    cli.command = given.command.clone();
    let mut values = Vec::new();
    for arg in &arguments {
        let origin = match origins.get(&arg.0) {
            Some(o) => o.clone(),
            None => match matches.value_source(&arg.1) {
                Some(ValueSource::DefaultValue) => Origin::Default,
                // Variables are read again by this parse; `given` knew them all.
                _ => continue,
            },
        };
        let text = match arg.2 {
            Kind::Switch if !matches.get_flag(&arg.1) => continue,
            Kind::Switch => "true".to_string(),
            Kind::Count => matches.get_count(&arg.1).to_string(),
            Kind::Value => matches
                .get_raw(&arg.1)
                .into_iter()
                .flatten()
                .map(|v| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(","),
        };
        values.push((arg.0.clone(), text, origin));
    }
    Ok(Merged { cli, values })
}

//! A run's settings from `--config`, flags, variables and `.env`: each source's command
//! line is merged (`layers`) and resolved exactly as flags are, and every error found in
//! the file names its line. Without a file, this is `resolve` of the flags. `serve` takes
//! the file's top level the same way (`load_serve`).

use std::path::Path;

use super::file::{self, Entry, FileError, FileErrors};
use super::layers::{FileLayers, Given, Merged, Origin, merge};
use super::resolve::{self, budget};
use super::serve::{ServeSettings, resolve_serve};
use super::{ConfigError, Settings};
use crate::cli::Cli;

/// Why the settings cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A flag or variable has a bad value (no config file).
    #[error(transparent)]
    Option(#[from] ConfigError),
    /// The config file is wrong, or a value set for it is (every error, with its line).
    #[error(transparent)]
    File(#[from] FileErrors),
}

/// One option's value as the run sees it: (long name, value as text, origin).
pub type Described = (String, String, Origin);

/// What `config show` prints: the run's values, then each source's.
#[derive(Debug, Default)]
pub struct Description {
    /// The values of the whole run (the file's top level, flags, variables).
    pub run: Vec<Described>,
    /// Each source's values, in the order of the settings' sources.
    pub sources: Vec<Vec<Described>>,
}

/// The settings and where their values came from. `lenient`: a variable a `*-env` key
/// names may be unset (checking a file where the secrets are not at hand).
pub fn load(
    cli: Cli,
    given: &Given,
    env: impl Fn(&str) -> Option<String>,
    lenient: bool,
) -> Result<(Settings, Description), LoadError> {
    let Some(path) = cli.options.config.clone() else {
        let no_file = FileLayers {
            file: "",
            globals: &[],
            own: &[],
        };
        // Exactly the flags' path; the description is for `config show` alone, so a run
        // never depends on it.
        let described = merge(given, &no_file, &env, lenient)
            .map(|m| m.values)
            .unwrap_or_default();
        let settings = resolve::resolve(cli, &env)?;
        let per_source = vec![described.clone(); settings.sources.len()];
        return Ok((
            settings,
            Description {
                run: described,
                sources: per_source,
            },
        ));
    };
    let name = path.display().to_string();
    let text = read(&path, &name)?;
    let config = file::parse(&name, &text)?;
    if !config.sources.is_empty()
        && let Some(origin) = given.origin("source").or(given.origin("namespace"))
    {
        return Err(ConfigError {
            flag: "source",
            message: format!(
                "given ({origin}) while {name} lists its own sources; remove one of them"
            ),
        }
        .into());
    }
    let layers = |own| FileLayers {
        file: &name,
        globals: &config.globals,
        own,
    };
    let run_layer = merge(given, &layers(&[]), &env, lenient).map_err(FileErrors)?;
    let entries: Vec<(usize, Vec<Entry>)> = match config.sources.is_empty() {
        true => vec![(1, Vec::new())],
        false => config.sources.clone(),
    };
    let mut errors = Vec::new();
    let mut schemes = Vec::new();
    let mut sources = Vec::new();
    let mut description = Description::default();
    let mut seen: Vec<Seen> = Vec::new();
    for (line, own) in &entries {
        let merged = match merge(given, &layers(own), &env, lenient) {
            Ok(merged) => merged,
            Err(e) => {
                errors.extend(e);
                continue;
            }
        };
        let found = match resolve::sources(&merged.cli.options, &env, &mut schemes) {
            Ok(found) => found,
            Err(e) => {
                errors.push(placed(&name, &merged.values, *line, e));
                continue;
            }
        };
        if found.is_empty() {
            let message = "no source given; list them under `sources:`, each with `source:`";
            errors.push(at(&name, *line, message.into()));
            continue;
        }
        let share = match own.iter().any(|e| e.key == "process-count") {
            true => budget(merged.cli.options.process_count)
                .map_err(|e| placed(&name, &merged.values, *line, e)),
            false => Ok(None),
        };
        let share = match share {
            Ok(share) => share,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let this = Seen::new(*line, &merged, &found);
        if let Some(clash) = seen.iter().find_map(|other| this.clash(other)) {
            errors.push(at(&name, *line, clash));
        }
        seen.push(this);
        let own_key = own
            .iter()
            .any(|e| e.key == "gcp-credentials" || e.key == "gcp-credentials-env");
        for mut source in found {
            source.share = share;
            source.logins.gcp_key_own = own_key;
            sources.push(source);
            description.sources.push(merged.values.clone());
        }
    }
    if !errors.is_empty() {
        return Err(FileErrors(errors).into());
    }
    description.run = run_layer.values.clone();
    let settings = resolve::run(run_layer.cli, &env, sources, schemes)
        .map_err(|e| FileErrors(vec![placed(&name, &description.run, 0, e)]))?;
    Ok((settings, description))
}

/// `gcrsync serve`'s settings, with `--config` as for sync: the file's top level (the
/// upstream credentials and network keys it shares with sync's sources) under flags and
/// variables. Serve's own options are flags and variables only. Also returns a note when
/// the file's `sources:` entries were left aside (their keys are sync's, per source).
pub fn load_serve(
    cli: Cli,
    given: &Given,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(ServeSettings, Option<String>), LoadError> {
    let Some(path) = cli.options.config.clone() else {
        return Ok((resolve_serve(cli, env)?, None));
    };
    let name = path.display().to_string();
    let text = read(&path, &name)?;
    let config = file::parse(&name, &text)?;
    let layers = FileLayers {
        file: &name,
        globals: &config.globals,
        own: &[],
    };
    let merged = merge(given, &layers, &env, false).map_err(FileErrors)?;
    let values = merged.values;
    let settings = resolve_serve(merged.cli, &env).map_err(|e| -> LoadError {
        match values
            .iter()
            .any(|(l, _, o)| l == e.flag && matches!(o, Origin::File { .. }))
        {
            true => FileErrors(vec![placed(&name, &values, 0, e)]).into(),
            false => e.into(),
        }
    })?;
    let note = (!config.sources.is_empty()).then(|| {
        format!(
            "{name}: serve reads the file's top level only; its {} `sources:` entries are \
             sync's and do not apply",
            config.sources.len()
        )
    });
    Ok((settings, note))
}

/// Reads the file; an unreadable one is an error of the file.
fn read(path: &Path, name: &str) -> Result<String, FileErrors> {
    std::fs::read_to_string(path)
        .map_err(|e| FileErrors(vec![at(name, 0, format!("cannot read it: {e}"))]))
}

fn at(file: &str, line: usize, message: String) -> FileError {
    FileError {
        file: file.to_string(),
        line,
        message,
    }
}

/// A bad value at the line that set it; one given as a flag or variable names them, and
/// one nobody set (a missing `target:`) points at the source's entry.
fn placed(file: &str, values: &[Described], fallback: usize, e: ConfigError) -> FileError {
    let flag = e.flag;
    let origin = values.iter().find(|(l, _, _)| l == flag).map(|(_, _, o)| o);
    match origin {
        Some(Origin::File { line, .. }) => at(file, *line, format!("{flag}: {}", e.message)),
        Some(Origin::Flag | Origin::Env(_) | Origin::DotEnv(_)) => at(file, 0, e.to_string()),
        _ => at(file, fallback, format!("{flag}: {}", e.message)),
    }
}

/// A source entry as far as clashes between entries go.
struct Seen {
    line: usize,
    namespaces: Vec<String>,
    target: String,
    template: String,
}

impl Seen {
    fn new(line: usize, merged: &Merged, found: &[super::SourceSettings]) -> Seen {
        Seen {
            line,
            namespaces: found.iter().map(|s| s.namespace.to_string()).collect(),
            target: found[0].target.to_string(),
            template: merged.cli.options.name_template.trim().to_string(),
        }
    }

    /// Why this entry cannot run beside `other` (an earlier one): the same namespace twice
    /// (one records file each), one's target the other's source, or two sources into one
    /// target under a template that keeps only the image name (the same names).
    fn clash(&self, other: &Seen) -> Option<String> {
        let names = self.namespaces.join(", ");
        let other_names = other.namespaces.join(", ");
        let line = other.line;
        if let Some(twice) = self
            .namespaces
            .iter()
            .find(|n| other.namespaces.contains(n))
        {
            return Some(format!(
                "{twice} is listed twice (also at line {line}); list each source once"
            ));
        }
        if other.namespaces.contains(&self.target) || self.namespaces.contains(&other.target) {
            return Some(format!(
                "{names} and {other_names} (line {line}): one's target is the other's source; mirror into another namespace"
            ));
        }
        let spread = self.template.contains("namespace") || self.template.contains("registry");
        if !spread && self.target == other.target && self.template == other.template {
            let (target, template) = (&self.target, &self.template);
            return Some(format!(
                "{names} and {other_names} (line {line}) both map into {target} with name-template {template:?}: their images would take the same names; give each its own target, or a name-template with {{{{ namespace }}}}"
            ));
        }
        None
    }
}

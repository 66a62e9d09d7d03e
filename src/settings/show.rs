//! `gcrsync config show`: the resolved configuration, each value with where it came from.
//! Secrets are never printed: passwords, tokens and keys show as `<redacted>`, and a
//! password inside a URL (a proxy's `user:password@`) is cut out.

use std::fmt::Write as _;

use super::file::PER_SOURCE;
use super::{Described, Description, Origin, Settings};

/// Options whose value is a secret.
const SECRET: &[&str] = &["source-password", "target-password", "github-token"];

/// Per-source secrets (they go with a source's logins).
const SOURCE_SECRET: &[&str] = &["source-password", "target-password"];

/// Variables read when an option is unset, by option.
const FALLBACKS: &[(&str, &str)] = &[
    ("github-token", "GITHUB_TOKEN"),
    ("github-repo", "GITHUB_REPOSITORY"),
    ("github-api-url", "GITHUB_API_URL"),
    ("target-username", "DOCKER_USERNAME"),
    ("target-password", "DOCKER_PASSWORD"),
    ("gcp-credentials", "GOOGLE_APPLICATION_CREDENTIALS"),
    ("docker-config", "DOCKER_CONFIG"),
];

/// `value` as it may be shown.
fn shown(long: &str, value: &str) -> String {
    if value.starts_with('<') && value.ends_with(" unset>") {
        return "<not set>".into();
    }
    let key_text = long == "gcp-credentials" && value.trim_start().starts_with('{');
    if SECRET.contains(&long) || key_text {
        return "<redacted>".into();
    }
    if long == "proxy" {
        // The proxy is the one value with a URL's userinfo: anything before its last `@`
        // may be a password, with or without a scheme.
        return super::transport::redacted(value);
    }
    value.to_string()
}

fn line(out: &mut String, long: &str, value: &str, origin: &str) {
    let _ = writeln!(out, "  {long}: {value}    # {origin}");
}

fn section(
    out: &mut String,
    values: &[Described],
    keep: impl Fn(&str) -> bool,
    env: &impl Fn(&str) -> Option<String>,
) {
    for (long, value, origin) in values.iter().filter(|(l, _, _)| keep(l)) {
        let value = match origin {
            Origin::File { via: Some(var), .. } if env(var).is_none() => "<not set>".into(),
            _ => shown(long, value),
        };
        line(out, long, &value, &origin.to_string());
    }
    for (long, var) in FALLBACKS.iter().filter(|(l, _)| keep(l)) {
        let set = values
            .iter()
            .any(|(l, _, o)| l == long && *o != Origin::Default);
        if !set && let Some(value) = env(var) {
            let value = match *long {
                "gcp-credentials" if value.trim_start().starts_with('{') => "<redacted>".into(),
                _ => shown(long, &value),
            };
            line(out, long, &value, &format!("env {var}"));
        }
    }
}

/// The text `config show` prints.
pub fn show(
    settings: &Settings,
    description: &Description,
    env: impl Fn(&str) -> Option<String>,
) -> String {
    let mut out = String::from(
        "# gcrsync configuration; after each value, where it came from (a source's own entry\n# > flag > variable > .env > the file's top level > default); secrets never shown\nrun:\n",
    );
    let per_source = |l: &str| PER_SOURCE.contains(&l) || SOURCE_SECRET.contains(&l);
    // The top level's process-count is the run's budget; a source's own is its cap.
    let run_wide = |l: &str| (!per_source(l) || l == "process-count") && l != "namespace";
    section(&mut out, &description.run, run_wide, &env);
    for (index, (source, values)) in settings
        .sources
        .iter()
        .zip(&description.sources)
        .enumerate()
    {
        let share = match source.share {
            Some(n) => format!("at most {n} copies"),
            None => "a fair share of process-count".into(),
        };
        let _ = writeln!(
            out,
            "source {}: {} → {} ({share})",
            index + 1,
            source.namespace,
            source.target
        );
        let keep = |l: &str| per_source(l) && l != "process-count";
        section(&mut out, values, keep, &env);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn secrets_and_url_passwords_are_never_shown() {
        assert_eq!(shown("github-token", "ghp_x"), "<redacted>");
        assert_eq!(shown("gcp-credentials", " {\"k\": 1}"), "<redacted>");
        assert_eq!(shown("gcp-credentials", "/k.json"), "/k.json");
        assert_eq!(
            shown("proxy", "http://me:pw@proxy:3128"),
            "http://me:<redacted>@proxy:3128"
        );
        assert_eq!(
            shown("proxy", "me:pw@proxy:3128"),
            "me:<redacted>@proxy:3128"
        );
        assert_eq!(
            shown("proxy", "socks5://me:p@ss@proxy:1080"),
            "socks5://me:<redacted>@proxy:1080"
        );
        assert_eq!(shown("proxy", "me@proxy:3128"), "me:<redacted>@proxy:3128");
        assert_eq!(shown("source-password", "<SRC_PASS unset>"), "<not set>");
        assert_eq!(shown("target", "docker.io/m"), "docker.io/m");
    }
}

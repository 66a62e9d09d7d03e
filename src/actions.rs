//! GitHub Actions integration, active only when `GITHUB_ACTIONS=true`: secrets masked,
//! a log group per source, an annotation per failed tag or repository, step outputs and a step
//! summary. It formats and writes; it decides nothing.

use std::io::Write;
use std::path::Path;

use crate::report::Report;
pub use crate::settings::ActionsEnv;

/// `%`, CR and LF escaped, as workflow command data requires.
pub fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Property values also escape `:` and `,`.
fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// `::add-mask::` lines for every line of every secret (the runner masks line by line).
pub fn mask_commands<'a>(secrets: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for line in secrets
        .into_iter()
        .flat_map(str::lines)
        .map(str::trim)
        .filter(|l| l.len() >= 4)
    {
        out.push_str(&format!("::add-mask::{}\n", escape_data(line)));
    }
    out
}

/// `::group::` / `::endgroup::` around a source's log lines.
pub fn group(title: &str) -> String {
    format!("::group::{}\n", escape_data(title))
}

/// Closes the group opened by [`group`].
pub const END_GROUP: &str = "::endgroup::\n";

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The step summary: a table per source, the failed tags with reasons, the commit link.
pub fn summary_markdown(report: &Report, repo_url: Option<&str>) -> String {
    let mut md = format!("### gcrsync {}\n\n", report.command);
    md.push_str("| source | target | copied | moved | adopted | unchanged | skipped | failed | pending |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for s in &report.sources {
        let c = &s.counts;
        md.push_str(&format!(
            "| `{}` | `{}` | {} | {} | {} | {} | {} | {} | {} |\n",
            cell(&s.source),
            cell(&s.target),
            c.copied,
            c.moved,
            c.adopted,
            c.unchanged,
            c.skipped,
            c.failed,
            c.pending
        ));
    }
    if !report.failed.is_empty() {
        md.push_str(
            "\n**Failed tags** (retried, last, on the next run)\n\n| tag | error |\n|---|---|\n",
        );
        for f in &report.failed {
            md.push_str(&format!(
                "| `{}/{}:{}` | {} |\n",
                cell(&f.source),
                cell(&f.image),
                cell(&f.tag),
                cell(&f.error)
            ));
        }
    }
    if !report.skipped.is_empty() {
        md.push_str(
            "\n**Skipped tags** (cannot be mirrored verbatim; not fetched again until their digest changes)\n\n| tag | reason |\n|---|---|\n",
        );
        for s in &report.skipped {
            md.push_str(&format!(
                "| `{}/{}:{}` | {} |\n",
                cell(&s.source),
                cell(&s.image),
                cell(&s.tag),
                cell(&s.reason)
            ));
        }
    }
    let dropped: Vec<String> = report
        .sources
        .iter()
        .flat_map(|s| {
            let source = cell(&s.source);
            let by = s.dropped_platforms.iter();
            by.map(move |(p, n)| format!("`{p}` ({n} tags of `{source}`)"))
        })
        .collect();
    if !dropped.is_empty() {
        md.push_str(&format!(
            "\nPlatforms not mirrored (`--platforms`): {}\n",
            dropped.join(", ")
        ));
    }
    if !report.failed_repositories.is_empty() {
        md.push_str(
            "\n**Repositories that could not be listed** (their records are kept; listed again on the next run)\n\n| repository | error |\n|---|---|\n",
        );
        for f in &report.failed_repositories {
            md.push_str(&format!(
                "| `{}/{}` | {} |\n",
                cell(&f.source),
                cell(&f.image),
                cell(&f.error)
            ));
        }
    }
    if let Some(why) = &report.stopped {
        md.push_str(&format!(
            "\nStopped starting copies early ({why}); the rest is pending for the next run.\n"
        ));
    }
    match (&report.commit_sha, repo_url) {
        (Some(sha), Some(url)) => md.push_str(&format!(
            "\nMetadata commit: [{}]({url}/commit/{sha})\n",
            &sha[..sha.len().min(12)]
        )),
        (Some(sha), None) => md.push_str(&format!("\nMetadata commit: `{sha}`\n")),
        (None, _) => {}
    }
    md
}

/// `::error::` per failed tag, `::warning::` when the run stopped early.
pub fn annotations(report: &Report) -> String {
    let mut out = String::new();
    for f in &report.failed {
        let title = escape_property(&format!(
            "gcrsync: {}/{}:{} failed",
            f.source, f.image, f.tag
        ));
        out.push_str(&format!(
            "::error title={title}::{}\n",
            escape_data(&f.error)
        ));
    }
    if let Some(error) = &report.error {
        out.push_str(&format!(
            "::error title=gcrsync stopped::{}\n",
            escape_data(error)
        ));
    }
    for f in &report.failed_repositories {
        let title = escape_property(&format!(
            "gcrsync: {}/{} could not be listed",
            f.source, f.image
        ));
        out.push_str(&format!(
            "::error title={title}::{}\n",
            escape_data(&f.error)
        ));
    }
    if let Some(why) = &report.stopped {
        out.push_str(&format!(
            "::warning title=gcrsync stopped early::{} tags left pending ({why})\n",
            report.totals.pending
        ));
    }
    out
}

/// The step outputs, `name=value` lines.
pub fn outputs(report: &Report, report_path: Option<&Path>) -> String {
    let t = &report.totals;
    let mut out = format!(
        "copied={}\nmoved={}\nadopted={}\nunchanged={}\nskipped={}\nfailed={}\npending={}\ncommit-sha={}\n",
        t.copied + t.moved,
        t.moved,
        t.adopted,
        t.unchanged,
        t.skipped,
        t.failed,
        t.pending,
        report.commit_sha.as_deref().unwrap_or("")
    );
    out.push_str(&format!(
        "report={}\n",
        report_path
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    ));
    out
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(text.as_bytes())
}

impl ActionsEnv {
    /// Writes annotations (stdout), outputs and the step summary at the end of a run.
    pub fn finish(&self, report: &Report, report_path: Option<&Path>) -> std::io::Result<()> {
        print!("{}", annotations(report));
        if let Some(path) = &self.output {
            append(path, &outputs(report, report_path))?;
        }
        if let Some(path) = &self.summary {
            append(path, &summary_markdown(report, self.repo_url.as_deref()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_summary_names_dropped_platforms() {
        let names = [("gcr.io/ns".to_string(), "docker.io/u".to_string())];
        let mut report = Report::empty("sync", &names);
        assert!(!summary_markdown(&report, None).contains("Platforms not mirrored"));
        report.sources[0]
            .dropped_platforms
            .insert("linux/s390x".into(), 3);
        let md = summary_markdown(&report, None);
        assert!(
            md.contains(
                "Platforms not mirrored (`--platforms`): `linux/s390x` (3 tags of `gcr.io/ns`)"
            ),
            "{md}"
        );
    }

    #[test]
    fn workflow_command_escaping() {
        assert_eq!(escape_data("50% done\nnext"), "50%25 done%0Anext");
        assert_eq!(escape_property("a:b,c"), "a%3Ab%2Cc");
        let masks = mask_commands([
            "hunter2-pass",
            "-----BEGIN KEY-----\nAAAAline\n-----END KEY-----",
            "ab",
        ]);
        assert_eq!(
            masks.lines().count(),
            4,
            "one per line, tiny values skipped: {masks}"
        );
        assert!(masks.contains("::add-mask::AAAAline\n"));
    }
}

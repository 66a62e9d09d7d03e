//! Renders the namespace README, the page of each image and the CHANGELOG block from
//! templates (pure, deterministic). Templates see the record through lazy views
//! (`views.rs`): nothing is copied into template values but what a template reads.

use std::path::PathBuf;
use std::sync::Arc;

use minijinja::{Environment, Value, context};
use serde::Serialize;

use super::changelog::BlockStart;
use super::lazy::BatchRecord;
use super::record::Outcome;
use super::views::{self, ImageView, ImagesView, RemovedView, SkippedView};

const README: &str = "namespace-readme.md.j2";
const IMAGE: &str = "image-page.md.j2";
const CHANGELOG: &str = "changelog-block.md.j2";

/// The most change lines a README shows (`recent`); `recent_count` has them all, and the
/// CHANGELOG lists them.
pub const RECENT: usize = 20;

/// A template could not be read or rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The user's template file is unreadable.
    #[error("{option} {path}: {source}")]
    Read {
        /// The option naming the file.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The template does not parse or render.
    #[error("template {0}")]
    Template(#[from] minijinja::Error),
}

/// The user's template files; `None` keeps the built-in one.
#[derive(Debug, Clone, Default)]
pub struct TemplateFiles {
    /// `--readme-template`.
    pub readme: Option<PathBuf>,
    /// `--image-template`.
    pub image: Option<PathBuf>,
    /// `--changelog-template`.
    pub changelog: Option<PathBuf>,
}

/// The templates of a run: built in, or the user's overrides.
pub struct Renderer {
    env: Environment<'static>,
    block_start: Option<BlockStart>,
}

/// One change to a tag in a CHANGELOG block or a README's recent changes: copied, or
/// (`change`) removed upstream, back upstream, pruned from the mirror.
#[derive(Debug, Serialize)]
pub struct ChangeLine {
    /// What happened: `copied`, `removed upstream`, `back upstream` or `pruned`.
    pub change: &'static str,
    /// `registry/namespace/image:tag` at the source.
    pub source: String,
    /// `target/repository:tag`.
    pub target: String,
    /// Image name relative to the namespace.
    pub image: String,
    /// The tag.
    pub tag: String,
    /// Short digest copied.
    pub digest: String,
    /// Short digest it replaced, when the tag moved.
    pub previous: Option<String>,
}

impl Renderer {
    /// Loads the built-in templates, each replaced by the user's file when given.
    pub fn new(files: &TemplateFiles) -> Result<Self, RenderError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(true);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        let templates = [
            (
                README,
                "--readme-template",
                &files.readme,
                include_str!("../../templates/namespace-readme.md.j2"),
            ),
            (
                IMAGE,
                "--image-template",
                &files.image,
                include_str!("../../templates/image-page.md.j2"),
            ),
            (
                CHANGELOG,
                "--changelog-template",
                &files.changelog,
                include_str!("../../templates/changelog-block.md.j2"),
            ),
        ];
        for (name, option, path, builtin) in templates {
            let source = match path {
                None => builtin.to_string(),
                Some(p) => std::fs::read_to_string(p).map_err(|source| RenderError::Read {
                    option,
                    path: p.clone(),
                    source,
                })?,
            };
            env.add_template_owned(name, source)?;
        }
        let mut renderer = Renderer {
            env,
            block_start: None,
        };
        renderer.block_start = renderer.find_block_start();
        Ok(renderer)
    }

    /// The namespace README: a line per image (its newest tags and a count, a link to its
    /// page), with `recent` (this batch's changes, of which the first `RECENT` are shown).
    pub fn readme(
        &self,
        record: &Arc<BatchRecord>,
        recent: &[ChangeLine],
    ) -> Result<String, RenderError> {
        // From each image's summary: only a template reading tags parses an image.
        let (mut tag_count, mut removed_count, mut updated_at) = (0, 0, None);
        for (_, summary) in record.summaries() {
            tag_count += summary.mirrored;
            removed_count += summary.removed;
            updated_at = updated_at.max(summary.updated_at);
        }
        let removed = Value::from_object(RemovedView::new(record.clone()));
        let shown = &recent[..recent.len().min(RECENT)];
        let out = self.env.get_template(README)?.render(context! {
            source => &record.head.source,
            target => &record.head.target,
            images => Value::from_object(ImagesView::new(record.clone())),
            tag_count => tag_count,
            updated_at => updated_at.as_deref().unwrap_or("never"),
            recent => shown,
            recent_count => recent.len(),
            skipped => Value::from_object(SkippedView::new(record.clone(), None)),
            skipped_count => record.head.skipped.len(),
            removed => removed,
            removed_count => removed_count,
        })?;
        Ok(out)
    }

    /// The page of `image` (recorded in `record`): every tag, its digest and platforms.
    pub fn image_page(
        &self,
        record: &Arc<BatchRecord>,
        image: &str,
    ) -> Result<String, RenderError> {
        let view = ImageView::new(record.clone(), image.to_string());
        let out = self.env.get_template(IMAGE)?.render(context! {
            source => &record.head.source,
            target => &record.head.target,
            image => Value::from_object(view),
        })?;
        Ok(out)
    }

    /// One CHANGELOG block for the copied tags of a batch; `time` is already formatted.
    pub fn changelog_block(
        &self,
        time: &str,
        entries: &[ChangeLine],
    ) -> Result<String, RenderError> {
        Ok(self
            .env
            .get_template(CHANGELOG)?
            .render(context! { time => time, entries => entries })?)
    }

    /// How this run's CHANGELOG blocks begin, to tell old blocks apart when rotating;
    /// `None` when the template writes no time.
    pub fn block_start(&self) -> Option<&BlockStart> {
        self.block_start.as_ref()
    }

    fn find_block_start(&self) -> Option<BlockStart> {
        const MARK: &str = "\u{1}time\u{1}";
        let text = self.changelog_block(MARK, &[]).ok()?;
        let at = text.find(MARK)?;
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        Some(BlockStart {
            prefix: text[line_start..at].to_string(),
        })
    }
}

/// Where the page of `image` lives, relative to the namespace's directory.
pub fn page_path(image: &str) -> String {
    views::page_path(image)
}

/// The change lines of the copied (not adopted) outcomes of a namespace, and of its
/// upstream deletions (`record`, with the outcomes applied, gives their target and digest).
pub fn change_lines<'a>(
    record: &BatchRecord,
    outcomes: impl IntoIterator<Item = &'a Outcome>,
) -> Vec<ChangeLine> {
    let source = &record.head.source;
    let recorded = |image: &String, tag: &String, change: &'static str| {
        let entry = record.image(image)?;
        let t = entry.tags.get(tag)?;
        Some(ChangeLine {
            change,
            source: format!("{source}/{image}:{tag}"),
            target: format!("{}:{tag}", entry.target),
            image: image.clone(),
            tag: tag.clone(),
            digest: t
                .digest
                .as_ref()
                .map_or(String::new(), |d| d.short().to_string()),
            previous: None,
        })
    };
    let mut lines: Vec<ChangeLine> = outcomes
        .into_iter()
        .filter_map(|o| match o {
            Outcome::DeletedUpstream { image, tag, .. } => recorded(image, tag, "removed upstream"),
            Outcome::BackUpstream { image, tag } => recorded(image, tag, "back upstream"),
            Outcome::Pruned { image, tag, .. } => recorded(image, tag, "pruned"),
            Outcome::Referrers {
                image, tag, added, ..
            } if *added > 0 => recorded(image, tag, "new referrers"),
            Outcome::Synced {
                image,
                tag,
                target,
                record,
                previous,
                copied: true,
            } => Some(ChangeLine {
                change: "copied",
                source: format!("{source}/{image}:{tag}"),
                target: format!("{target}:{tag}"),
                image: image.clone(),
                tag: tag.clone(),
                digest: record
                    .digest
                    .as_ref()
                    .map_or(String::new(), |d| d.short().to_string()),
                previous: previous.as_ref().map(|d| d.short().to_string()),
            }),
            _ => None,
        })
        .collect();
    lines.sort_by(|a, b| (&a.image, &a.tag).cmp(&(&b.image, &b.tag)));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_start_is_what_the_template_writes_before_the_time() {
        let renderer = Renderer::new(&TemplateFiles::default()).unwrap();
        assert_eq!(renderer.block_start().unwrap().prefix, "### ");
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("block.j2");
        std::fs::write(&user, "## {{ time }} ({{ entries | length }})\n").unwrap();
        let files = TemplateFiles {
            changelog: Some(user.clone()),
            ..TemplateFiles::default()
        };
        assert_eq!(
            Renderer::new(&files).unwrap().block_start().unwrap().prefix,
            "## "
        );
        std::fs::write(&user, "- {{ entries | length }} more\n").unwrap();
        assert_eq!(Renderer::new(&files).unwrap().block_start(), None);
    }
}

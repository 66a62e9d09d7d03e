//! Renders the per-namespace README and the CHANGELOG block from templates (pure, deterministic).

use std::path::PathBuf;

use minijinja::{Environment, context};
use serde::Serialize;

use super::record::{NamespaceRecord, Outcome};

const README: &str = "namespace-readme.md.j2";
const CHANGELOG: &str = "changelog-block.md.j2";

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

/// The templates of a run: built in, or the user's overrides.
pub struct Renderer {
    env: Environment<'static>,
}

/// One copied tag in a CHANGELOG block or a README's recent changes.
#[derive(Debug, Serialize)]
pub struct ChangeLine {
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

#[derive(Serialize)]
struct TagView<'a> {
    tag: &'a str,
    digest: &'a str,
    platforms: &'a [String],
    synced_at: &'a str,
}

#[derive(Serialize)]
struct SkippedView<'a> {
    image: &'a str,
    tag: &'a str,
    digest: &'a str,
    reason: &'a str,
    since: &'a str,
}

#[derive(Serialize)]
struct ImageView<'a> {
    name: &'a str,
    target: &'a str,
    tags: Vec<TagView<'a>>,
}

impl Renderer {
    /// Loads the built-in templates, replaced by `readme`/`changelog` files when given.
    pub fn new(readme: Option<&PathBuf>, changelog: Option<&PathBuf>) -> Result<Self, RenderError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(true);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        let load = |option, path: Option<&PathBuf>, builtin: &'static str| match path {
            None => Ok(builtin.to_string()),
            Some(p) => std::fs::read_to_string(p).map_err(|source| RenderError::Read {
                option,
                path: p.clone(),
                source,
            }),
        };
        env.add_template_owned(
            README,
            load(
                "--readme-template",
                readme,
                include_str!("../../templates/namespace-readme.md.j2"),
            )?,
        )?;
        env.add_template_owned(
            CHANGELOG,
            load(
                "--changelog-template",
                changelog,
                include_str!("../../templates/changelog-block.md.j2"),
            )?,
        )?;
        Ok(Renderer { env })
    }

    /// The namespace README for `record`, with `recent` as this batch's changes.
    pub fn readme(
        &self,
        record: &NamespaceRecord,
        recent: &[ChangeLine],
    ) -> Result<String, RenderError> {
        let images: Vec<ImageView> = record
            .images
            .iter()
            .map(|(name, image)| ImageView {
                name,
                target: &image.target,
                tags: image
                    .tags
                    .iter()
                    .map(|(tag, t)| TagView {
                        tag,
                        digest: t.digest.as_ref().map_or("unknown", |d| d.as_str()),
                        platforms: &t.platforms,
                        synced_at: &t.synced_at,
                    })
                    .collect(),
            })
            .collect();
        let tag_count: usize = images.iter().map(|i| i.tags.len()).sum();
        let skipped: Vec<SkippedView> = record
            .skipped
            .iter()
            .map(|(key, s)| {
                let (image, tag) = key.rsplit_once(':').unwrap_or((key, ""));
                SkippedView {
                    image,
                    tag,
                    digest: s.digest.short(),
                    reason: &s.reason,
                    since: &s.since,
                }
            })
            .collect();
        let updated_at = record
            .images
            .values()
            .flat_map(|i| i.tags.values())
            .map(|t| t.synced_at.as_str())
            .max();
        let out = self.env.get_template(README)?.render(context! {
            source => &record.source,
            target => &record.target,
            images => images,
            tag_count => tag_count,
            updated_at => updated_at.unwrap_or("never"),
            recent => recent,
            skipped => skipped,
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
}

/// The change lines of the copied (not adopted) outcomes of a namespace.
pub fn change_lines(source: &str, outcomes: &[Outcome]) -> Vec<ChangeLine> {
    let mut lines: Vec<ChangeLine> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Synced {
                image,
                tag,
                target,
                record,
                previous,
                copied: true,
            } => Some(ChangeLine {
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

//! `--prune` against the target: each planned deletion checked (HEAD each tag: one the
//! target moved to other content is not ours to delete) and sent by digest, or by tag
//! where the registry refuses a tagged digest (gcr.io and Artifact Registry answer
//! `GOOGLE_MANIFEST_DANGLING_TAG` until the tags are gone). A registry that refuses
//! deletes is reported, and not asked again in this run.

use std::collections::HashMap;

use serde::Serialize;

use super::PruneStep;
use crate::metadata::record::Outcome;
use crate::oci::manifest::Contents;
use crate::oci::{Error, ManifestRef, Registry};
use crate::reference::{Digest, RepoPath, Tag};

/// One tag in the prune report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneTag {
    /// Source namespace.
    pub source: String,
    /// Image name relative to it.
    pub image: String,
    /// The tag.
    pub tag: String,
    /// Why it stays, or what failed (none for a pruned tag).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What `--prune` and the listing did to upstream deletions in this run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Tags marked deleted upstream in this run.
    pub removed_upstream: Vec<PruneTag>,
    /// Marked tags listed again (un-marked).
    pub back_upstream: Vec<PruneTag>,
    /// Tags deleted from the target (for `test`: that would be).
    pub pruned: Vec<PruneTag>,
    /// Marked tags left on the target on purpose, and why.
    pub held: Vec<PruneTag>,
    /// Tags the target refused to delete (deletes disabled, or not allowed to these
    /// credentials): reported, the run goes on, they stay marked for the next run.
    pub refused: Vec<PruneTag>,
    /// Tags whose deletion failed otherwise; they stay marked for the next run.
    pub failed: Vec<PruneTag>,
    /// Why nothing was pruned at all (`--prune-max`), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PruneReport {
    /// Whether pruning fell short of what was asked (exit 1).
    pub fn failed(&self) -> bool {
        !self.refused.is_empty() || !self.failed.is_empty() || self.error.is_some()
    }

    /// Lines for the summary on stderr.
    pub fn summary(&self) -> String {
        let name = |t: &PruneTag| format!("{}/{}:{}", t.source, t.image, t.tag);
        let mut out = String::new();
        let counted = [
            (
                "removed upstream (marked in images.json)",
                &self.removed_upstream,
            ),
            ("back upstream (unmarked)", &self.back_upstream),
            ("pruned from the target", &self.pruned),
        ];
        for (what, tags) in counted.into_iter().filter(|(_, t)| !t.is_empty()) {
            let mut names: Vec<String> = tags.iter().take(10).map(name).collect();
            if tags.len() > 10 {
                names.push(format!("and {} more", tags.len() - 10));
            }
            out.push_str(&format!(
                "{what}: {} tag(s): {}\n",
                tags.len(),
                names.join(", ")
            ));
        }
        let detailed = [
            ("kept on the target", &self.held),
            ("prune refused", &self.refused),
            ("prune failed", &self.failed),
        ];
        for (what, tags) in detailed {
            for t in tags {
                let detail = t.detail.as_deref().unwrap_or_default();
                out.push_str(&format!("{what}: {}: {detail}\n", name(t)));
            }
        }
        if let Some(error) = &self.error {
            out.push_str(&format!("prune: {error}\n"));
        }
        out
    }

    /// Whether there is anything to tell.
    pub fn is_empty(&self) -> bool {
        self.removed_upstream.is_empty()
            && self.back_upstream.is_empty()
            && self.pruned.is_empty()
            && self.held.is_empty()
            && !self.failed()
    }
}

/// How one deletion ended.
#[derive(Debug)]
pub enum Deleted {
    /// These tags are gone from the target (deleted now, or gone already).
    Pruned(Vec<String>),
    /// The registry refuses deletes: nothing more is asked of it in this run.
    Refused(String),
    /// It failed; the tags stay marked.
    Failed(String),
}

/// What the run did for one step: the tags pruned, and per other tag what stopped it.
#[derive(Debug)]
pub struct StepResult {
    /// The deletion.
    pub deleted: Deleted,
    /// Tags left because the target's tag now serves another digest.
    pub moved: Vec<(String, String)>,
}

/// Whether the registry refuses deletes as such: disabled (405, `UNSUPPORTED`), or not
/// allowed to these credentials (401/403).
fn refuses(e: &Error) -> bool {
    let unsupported =
        matches!(e, Error::Status { detail, .. } if detail.starts_with("UNSUPPORTED"));
    unsupported
        || matches!(e.status(), Some(401 | 403 | 405))
        || matches!(e, Error::Auth { .. } | Error::NoAccess { .. })
}

/// Whether the registry wants the tags gone before the digest (gcr.io's
/// `GOOGLE_MANIFEST_DANGLING_TAG`, and other 400/409/412 answers to a tagged digest).
fn wants_tags_first(e: &Error) -> bool {
    matches!(e.status(), Some(400 | 409 | 412))
}

/// Deletes one step's digest from `repo` on `target`.
pub async fn delete_step<R: Registry>(target: &R, repo: &RepoPath, step: &PruneStep) -> StepResult {
    let mut ours = Vec::new();
    let mut moved = Vec::new();
    let mut gone = Vec::new();
    for tag in &step.tags {
        let Ok(parsed) = tag.parse::<Tag>() else {
            continue;
        };
        match target
            .head_manifest(repo, &ManifestRef::Tag(parsed.clone()))
            .await
        {
            Ok(Some(head)) if head.digest == step.digest => ours.push(parsed),
            Ok(Some(head)) => moved.push((
                tag.clone(),
                format!(
                    "the target's tag now serves {}, not the {} gcrsync mirrored; left alone",
                    head.digest.short(),
                    step.digest.short()
                ),
            )),
            Ok(None) => gone.push(tag.clone()),
            Err(e) if refuses(&e) => {
                return StepResult {
                    deleted: Deleted::Refused(e.to_string()),
                    moved,
                };
            }
            Err(e) => {
                return StepResult {
                    deleted: Deleted::Failed(e.to_string()),
                    moved,
                };
            }
        }
    }
    if ours.is_empty() {
        return StepResult {
            deleted: Deleted::Pruned(gone),
            moved,
        };
    }
    let by_digest = ManifestRef::Digest(step.digest.clone());
    let deleted = match target.delete_manifest(repo, &by_digest).await {
        Ok(()) => Deleted::Pruned(step.tags.clone()),
        Err(e) if e.is_not_found() => Deleted::Pruned(step.tags.clone()),
        Err(e) if refuses(&e) => Deleted::Refused(e.to_string()),
        Err(e) if wants_tags_first(&e) => by_tags(target, repo, &ours, &by_digest, e).await,
        Err(e) => Deleted::Failed(e.to_string()),
    };
    let deleted = match deleted {
        // Tags found gone already are pruned too; the moved ones are not.
        Deleted::Pruned(mut tags) => {
            tags.retain(|t| !moved.iter().any(|(m, _)| m == t));
            tags.extend(gone);
            tags.sort();
            tags.dedup();
            Deleted::Pruned(tags)
        }
        other => other,
    };
    StepResult { deleted, moved }
}

/// The live index (`image:tag` of a step's guards) whose child the step's digest is, if
/// any: read from the target, each index once per run (`read`: index → its children). An
/// index that cannot be read leaves the answer unknown (an error: nothing is deleted).
pub async fn child_of<R: Registry>(
    target: &R,
    repo: &RepoPath,
    step: &PruneStep,
    read: &mut HashMap<Digest, Vec<Digest>>,
) -> Result<Option<String>, String> {
    for (label, index) in &step.guards {
        if !read.contains_key(index) {
            let reference = ManifestRef::Digest(index.clone());
            let children = match target.get_manifest(repo, &reference).await {
                Ok(manifest) => match manifest.contents() {
                    Ok(Contents::Index(children)) => {
                        children.into_iter().map(|(d, _)| d.digest).collect()
                    }
                    _ => Vec::new(),
                },
                // Gone from the target: it holds no child any more.
                Err(e) if e.is_not_found() => Vec::new(),
                Err(e) => {
                    return Err(format!(
                        "cannot read the index of {label} to check that this is none of its children: {e}"
                    ));
                }
            };
            read.insert(index.clone(), children);
        }
        if read[index].contains(&step.digest) {
            return Ok(Some(label.clone()));
        }
    }
    Ok(None)
}

/// Deletes each tag, then the digest they left untagged (a failure there leaves an
/// untagged manifest, which is no tag of the mirror: the tags are pruned).
async fn by_tags<R: Registry>(
    target: &R,
    repo: &RepoPath,
    tags: &[Tag],
    digest: &ManifestRef,
    first: Error,
) -> Deleted {
    for tag in tags {
        match target
            .delete_manifest(repo, &ManifestRef::Tag(tag.clone()))
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                return Deleted::Failed(format!("{first}; deleting the tag {tag} instead: {e}"));
            }
        }
    }
    if let Err(e) = target.delete_manifest(repo, digest).await {
        tracing::debug!("{repo}@{digest} stays untagged: {e}");
    }
    Deleted::Pruned(tags.iter().map(ToString::to_string).collect())
}

/// The outcome recording a pruned tag.
pub fn pruned(step: &PruneStep, tag: &str, at: &str) -> Outcome {
    Outcome::Pruned {
        image: step.image.clone(),
        tag: tag.to_string(),
        at: at.to_string(),
    }
}

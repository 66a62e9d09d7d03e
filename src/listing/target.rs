//! The target's state for the tags that need checking: one `tags/list` per target
//! repository, and a manifest HEAD only for the listed tags (an absent repository or an
//! unlisted tag is absent), so an empty target costs one request per repository.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures_util::{StreamExt, stream};

use super::{ListError, ListFailure, denied};
use crate::oci::{self, ManifestRef, Registry};
use crate::plan::{Candidate, TargetHead, TargetKey};
use crate::reference::{RepoPath, Tag};

/// What the target serves under each checked candidate's tag, and the candidates whose
/// check failed (each a failure of its source; they are left out of the plan).
#[derive(Debug, Default)]
pub struct TargetHeads {
    /// What the target serves, for the checked candidates it holds: a checked candidate
    /// neither here nor failed is absent. (An empty target holds none, so 15,000 new tags
    /// cost no entry each.)
    pub heads: HashMap<TargetKey, TargetHead>,
    /// Whether any check succeeded (with `refused`: whether the target is usable at all).
    answered: bool,
    /// (source index, failure) of each check that failed after retries.
    pub failures: Vec<(usize, ListFailure)>,
}

/// What listing one target repository says about its candidates' tags.
#[derive(Debug, PartialEq, Eq)]
enum Listed {
    /// The repository does not exist (404, `NAME_UNKNOWN`): none of its tags are there.
    Absent,
    /// These tags are there.
    Tags(HashSet<Tag>),
    /// The listing failed in a way a HEAD would fail too (refused credentials, a target
    /// never reached): each of the repository's tags fails with it.
    Unusable,
    /// The listing failed otherwise (a registry without a working `tags/list`, a 403 on
    /// listing only): the tags are HEADed one by one, as if it had not been asked.
    Unknown,
}

/// Refused credentials, or a target never reached (TLS, DNS, connection).
fn unusable(error: &oci::Error) -> bool {
    matches!(
        error,
        oci::Error::Auth { .. } | oci::Error::Transport { .. } | oci::Error::Tls { .. }
    )
}

/// How a listing answer is read (pure).
fn read_listing(result: &oci::Result<Vec<Tag>>) -> Listed {
    match result {
        Ok(tags) => Listed::Tags(tags.iter().cloned().collect()),
        Err(e) if e.is_not_found() => Listed::Absent,
        Err(e) if unusable(e) => Listed::Unusable,
        Err(_) => Listed::Unknown,
    }
}

/// Whether `tag` must be HEADed after the listing said `listed` (pure): only a tag the
/// repository lists, or any tag when the listing told nothing.
fn needs_head(listed: &Listed, tag: &Tag) -> bool {
    match listed {
        Listed::Absent | Listed::Unusable => false,
        Listed::Tags(tags) => tags.contains(tag),
        Listed::Unknown => true,
    }
}

/// The outcome of checking one candidate.
type Checked<'a> = (&'a Candidate, oci::Result<Option<oci::ManifestHead>>);

/// Lists each candidate's target repository once, then HEADs the listed tags, for
/// adoption and for records without digests. When nothing succeeds and the target
/// refused the credentials or could not be reached, the target is unusable (exit 3);
/// otherwise a failed check fails its tag alone.
pub async fn target_heads<R: Registry>(
    target: &R,
    candidates: &[&Candidate],
    queries: usize,
) -> Result<TargetHeads, ListError> {
    let mut by_repo: BTreeMap<&RepoPath, Vec<&Candidate>> = BTreeMap::new();
    for c in candidates {
        by_repo.entry(&c.target.path).or_default().push(c);
    }
    let repos: Vec<&RepoPath> = by_repo.keys().copied().collect();
    let owned: Vec<RepoPath> = repos.iter().map(|r| (*r).clone()).collect();
    target.prepare(&owned).await;
    let listings: Vec<(&RepoPath, oci::Result<Vec<Tag>>)> = stream::iter(repos)
        .map(|repo| async move {
            let listed = target.list_tags(repo).await.map(|l| l.tags);
            (repo, listed)
        })
        .buffer_unordered(queries)
        .collect()
        .await;
    let mut checked: Vec<Checked<'_>> = Vec::new();
    let mut failed_repos = Vec::new();
    let mut to_head = Vec::new();
    for (repo, result) in listings {
        let listed = read_listing(&result);
        let tags = by_repo.remove(repo).unwrap_or_default();
        match (listed, result) {
            (Listed::Unusable, Err(e)) => failed_repos.push((e, tags)),
            (listed, result) => {
                if let Err(e) = result {
                    tracing::debug!("{repo}: target listing failed ({e}); HEADing its tags");
                }
                for c in tags {
                    if needs_head(&listed, &c.tag) {
                        to_head.push(c);
                    } else {
                        checked.push((c, Ok(None)));
                    }
                }
            }
        }
    }
    let headed: Vec<Checked<'_>> = stream::iter(to_head)
        .map(|c| async move {
            let head = target
                .head_manifest(&c.target.path, &ManifestRef::Tag(c.tag.clone()))
                .await;
            (c, head)
        })
        .buffer_unordered(queries)
        .collect()
        .await;
    checked.extend(headed);
    let (mut out, refused) = collect(checked, failed_repos);
    match refused {
        Some(e) if !out.answered => Err(e),
        _ => {
            out.failures
                .sort_by(|a, b| (a.0, &a.1.image, &a.1.tag).cmp(&(b.0, &b.1.image, &b.1.tag)));
            Ok(out)
        }
    }
}

/// The failure of one candidate's check: (what, the text reported).
fn failure_text(c: &Candidate, error: &oci::Error) -> (String, ListFailure) {
    let what = format!("{}:{}", c.target, c.tag);
    tracing::error!("{what}: {error}");
    let text = if denied(error) {
        format!("no access to {what} on the target: {error}")
    } else {
        format!("{what} (target): {error}")
    };
    let failed = ListFailure {
        image: c.image.clone(),
        tag: Some(c.tag.clone()),
        error: text,
    };
    (what, failed)
}

/// Sorts the checks into heads and failures (`failed_repos`: repositories whose listing
/// failed for all their tags), with the first error saying the target itself is unusable.
fn collect(
    checked: Vec<Checked<'_>>,
    failed_repos: Vec<(oci::Error, Vec<&Candidate>)>,
) -> (TargetHeads, Option<ListError>) {
    let mut out = TargetHeads::default();
    let mut refused = None;
    let mut fail = |c: &Candidate, error: oci::Error, out: &mut TargetHeads| {
        let (what, failed) = failure_text(c, &error);
        out.failures.push((c.source, failed));
        if unusable(&error) && refused.is_none() {
            refused = Some(ListError {
                source_ref: what,
                error,
            });
        }
    };
    for (c, head) in checked {
        match head {
            Ok(head) => {
                out.answered = true;
                if let Some(h) = head {
                    let head = TargetHead {
                        digest: h.digest,
                        media_type: h.media_type,
                    };
                    out.heads
                        .insert((c.source, c.image.clone(), c.tag.clone()), head);
                }
            }
            Err(error) => fail(c, error, &mut out),
        }
    }
    for (error, tags) in failed_repos {
        let Some((first, rest)) = tags.split_first() else {
            continue;
        };
        for c in rest {
            let (_, failed) = failure_text(c, &error);
            out.failures.push((c.source, failed));
        }
        fail(first, error, &mut out);
    }
    (out, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(t: &str) -> Tag {
        t.parse().unwrap()
    }

    fn status(status: u16) -> oci::Error {
        oci::Error::Status {
            method: "GET".into(),
            url: "http://r/v2/m/tags/list".into(),
            status,
            detail: String::new(),
            retry_after: None,
        }
    }

    #[test]
    fn only_listed_tags_are_headed() {
        let listed = read_listing(&Ok(vec![tag("1"), tag("2")]));
        assert!(needs_head(&listed, &tag("1")));
        assert!(!needs_head(&listed, &tag("3")), "an unlisted tag is absent");
    }

    #[test]
    fn an_absent_repository_needs_no_head_and_a_broken_listing_heads_everything() {
        let absent = read_listing(&Err(status(404)));
        assert_eq!(absent, Listed::Absent);
        assert!(!needs_head(&absent, &tag("1")));
        for code in [403, 500, 400] {
            let unknown = read_listing(&Err(status(code)));
            assert_eq!(unknown, Listed::Unknown, "{code}");
            assert!(needs_head(&unknown, &tag("1")));
        }
        let refused = oci::Error::Auth {
            registry: "r".into(),
            detail: "bad login".into(),
        };
        assert_eq!(read_listing(&Err(refused)), Listed::Unusable);
    }
}

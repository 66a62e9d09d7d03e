//! `gcrsync compare`: rebuild the records from what the target actually holds.

use super::connect::Registries;
use super::{Finished, list_all, names};
use crate::exit::Failure;
use crate::metadata::record::{Outcome, TagRecord};
use crate::metadata::{MetadataStore, Recorder};
use crate::oci::manifest::is_index;
use crate::oci::{ManifestRef, Registry};
use crate::plan::{Candidate, Plan, TargetHead};
use crate::settings::Settings;
use crate::{report, run};

/// HEADs every mapped tag on the target and records what is there (and drops what is not).
pub(super) async fn compare<M: MetadataStore>(
    settings: &Settings,
    registries: &Registries,
    recorder: &Recorder<M>,
) -> Result<Finished, Failure> {
    let records = recorder.load_all().await?;
    // Upstream deletions are for sync to record; compare records what the target holds.
    let listings = list_all(settings, registries, &records, recorder, false).await?;
    let (candidates, mut stats) = (listings.candidates, listings.stats);
    let all: Vec<&Candidate> = candidates.iter().collect();
    let checked = super::target_heads(registries, &all, settings.limits.queries).await?;
    // A tag whose HEAD failed is unknown, neither found nor missing: its record stays.
    let mut unknown = std::collections::HashSet::new();
    for (source, failed) in checked.failures {
        unknown.insert((source, failed.image.clone(), failed.tag.clone()));
        stats[source].failures.push(failed);
    }
    let heads = checked.heads;
    let at = crate::metadata::record::now_utc();
    let mut outcomes = Vec::new();
    for c in &candidates {
        let key = (c.source, c.image.clone(), c.tag.clone());
        let (image, tag) = (c.image.to_string(), c.tag.to_string());
        match heads.get(&key).cloned() {
            Some(TargetHead { digest, media_type }) => {
                // Only an index or list has platforms to read; other manifests are not fetched.
                let platforms = if is_index(&media_type) {
                    let reference = ManifestRef::Digest(digest.clone());
                    let manifest = registries
                        .target(c.source)
                        .get_manifest(&c.target.path, &reference)
                        .await;
                    manifest
                        .ok()
                        .and_then(|m| m.contents().ok())
                        .map(|c| c.platforms())
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                // A platform subset the records know keeps its upstream digest.
                let subset = records[c.source]
                    .images
                    .get(&image)
                    .and_then(|i| i.tags.get(&tag))
                    .filter(|t| t.digest.as_ref() == Some(&digest) && t.source_digest.is_some());
                let record = TagRecord {
                    deleted_upstream_at: None,
                    pruned_at: None,
                    digest: Some(digest),
                    source_digest: subset.and_then(|t| t.source_digest.clone()),
                    dropped_platforms: subset.map_or(Vec::new(), |t| t.dropped_platforms.clone()),
                    media_type,
                    platforms,
                    referrers: Vec::new(),
                    referrer_tags: None,
                    synced_at: at.clone(),
                };
                let target = c.target.to_string();
                outcomes.push((
                    c.source,
                    Outcome::Synced {
                        image,
                        tag,
                        target,
                        record,
                        previous: None,
                        copied: false,
                    },
                ));
            }
            None if !unknown.contains(&(c.source, c.image.clone(), Some(c.tag.clone())))
                && records[c.source].digest(&image, &tag).is_some() =>
            {
                outcomes.push((c.source, Outcome::Missing { image, tag }));
            }
            None => {}
        }
    }
    let unchanged: Vec<usize> = settings.sources.iter().map(|_| 0).collect();
    let plan = Plan {
        unchanged,
        ..Plan::default()
    };
    let mut result = run::RunResult::default();
    if settings.dry_run {
        for (_, outcome) in &outcomes {
            println!("{}", serde_json::to_string(outcome).unwrap_or_default());
        }
    } else {
        // Thousands of records: a few commits bounded by size, not by --commit-every.
        result.commits = recorder
            .commit_bulk(&outcomes, jiff::Timestamp::now())
            .await?;
    }
    for (source, outcome) in outcomes {
        result.note(source, outcome);
    }
    Ok(Finished {
        report: report::build("compare", &names(settings), &stats, &plan, Some(&result)),
    })
}

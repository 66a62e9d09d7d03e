//! Reads the referrers of unchanged tags again (`Plan::recheck`), after the copies and
//! within the deadline, copying the new ones; then moves each namespace's schedule on
//! (`referrers_checked_through`) where every due re-read was made (a deadline or a signal
//! leaves it), and records whether its source has the referrers API.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{Batcher, RunOptions};
use crate::copy::Copier;
use crate::copy::referrers::Place;
use crate::metadata::MetadataStore;
use crate::metadata::record::Outcome;
use crate::oci::Registry;
use crate::plan::{Plan, Recheck};
use crate::reference::Digest;
use crate::referrers::recheck::{Why, mark};

/// Tags whose referrers were read again, per source.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rechecked {
    /// Tags whose referrers were read.
    pub read: usize,
    /// Referrers found new, and copied.
    pub added: usize,
}

/// A re-read that failed: (source index, image, tag, error). The tag stays mirrored; its
/// referrers are read again next run.
pub type RecheckFailure = (usize, String, String, String);

async fn read_again<S, T>(
    recheck: &Recheck,
    src: &Arc<S>,
    copier: &Copier<T>,
) -> Result<Outcome, crate::copy::CopyError>
where
    S: Registry + 'static,
    T: Registry + 'static,
{
    let c = &recheck.candidate;
    let place = Place {
        src,
        src_repo: &c.source_repo,
        dst_repo: &c.target.path,
        tags: &c.referrer_tags,
    };
    let known: HashSet<Digest> = recheck.known.iter().cloned().collect();
    let found = copier
        .recheck_referrers(&place, c.digest.clone(), recheck.index.as_ref(), &known)
        .await?;
    Ok(Outcome::Referrers {
        image: c.image.to_string(),
        tag: c.tag.to_string(),
        subject: c.digest.clone(),
        added: found.iter().filter(|d| !known.contains(*d)).count(),
        referrers: found,
        mark: mark(&c.digest, &c.referrer_tags),
    })
}

/// Whether a re-read found exactly what the record holds (due by schedule, so its listed
/// referrer tags are as recorded).
fn same(recheck: &Recheck, outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Referrers { referrers, .. } if recheck.why == Why::Schedule
        && *referrers == recheck.known)
}

/// Runs `plan.recheck` with `options.concurrency` at once, none started after the
/// deadline or a cancel; records each tag's referrers, then each namespace's schedule.
pub(super) async fn recheck_referrers<S, T, M>(
    plan: &Plan,
    sources: &[Arc<S>],
    copiers: &[Arc<Copier<T>>],
    options: &RunOptions,
    cancel: &CancellationToken,
    batcher: &mut Batcher<'_, M>,
) where
    S: Registry + 'static,
    T: Registry + 'static,
    M: MetadataStore,
{
    let mut unfinished = vec![false; sources.len()];
    let mut done = vec![false; plan.recheck.len()];
    let open = || !cancel.is_cancelled() && options.deadline.is_none_or(|d| Instant::now() < d);
    let mut reads = futures_util::stream::iter(plan.recheck.iter().enumerate())
        .take_while(|_| std::future::ready(open()))
        .map(|(i, recheck)| {
            let source = recheck.candidate.source;
            let (src, copier) = (&sources[source], &copiers[source]);
            async move { (i, read_again(recheck, src, copier).await) }
        })
        .buffer_unordered(options.concurrency.max(1));
    loop {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            next = reads.next() => next,
        };
        let Some((i, result)) = next else { break };
        done[i] = true;
        let c = &plan.recheck[i].candidate;
        match result {
            // A re-read by schedule that found what the record holds changes nothing: only
            // counted, so a namespace's turn does not load and rewrite `images.json` per
            // batch for nothing.
            Ok(outcome) if same(&plan.recheck[i], &outcome) => {
                batcher.result.note(c.source, outcome)
            }
            Ok(outcome) => batcher.push(c.source, outcome).await,
            // Reported, and read again on its next turn (at once, when the listing showed
            // the change: its mark is not recorded). The schedule still moves on: one
            // broken tag must not hold every other tag's turn.
            Err(e) => {
                tracing::warn!("{}:{}: referrers not read again: {e}", c.source_repo, c.tag);
                let failed = (
                    c.source,
                    c.image.to_string(),
                    c.tag.to_string(),
                    e.to_string(),
                );
                batcher.result.referrer_failures.push(failed);
            }
        }
        if batcher.broken {
            break;
        }
    }
    drop(reads);
    for (recheck, done) in plan.recheck.iter().zip(done) {
        if !done {
            unfinished[recheck.candidate.source] = true;
        }
    }
    for (source, src) in sources.iter().enumerate() {
        let through = plan
            .recheck_through
            .get(source)
            .cloned()
            .flatten()
            .filter(|_| !unfinished[source]);
        let api = src.referrers_api();
        if through.is_some() || api.is_some() {
            // With the last batch, not a commit of its own (and not counted in
            // `--commit-every`): it changes no page.
            batcher.hold(source, Outcome::ReferrersChecked { through, api });
        }
    }
}

//! Executes a plan: adoptions, then copies with `Limits::tags` in flight, recorded in
//! batches of `--commit-every`, stopping new copies at the deadline and cancelling the
//! running ones on SIGINT/SIGTERM.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::copy::referrers::Place;
use crate::copy::{Copied, Copier, CopyError, index_platforms};
use crate::metadata::record::{Outcome, TagRecord, now_utc};
use crate::metadata::{Committed, MetadataStore, Recorder, StoreError};
use crate::oci::Registry;
use crate::oci::manifest::is_index;
use crate::plan::{Plan, Reason, Step};
use crate::progress::Progress;

mod recheck;
pub use recheck::{RecheckFailure, Rechecked};

/// Cancelled by a signal handler: stop starting work, cancel the running copies, commit
/// what finished, report. Waiters wake at once (`cancelled()`), nobody polls.
pub type StopFlag = CancellationToken;

/// After a signal, the last commit gets this long: Actions kills the step 10 s after its
/// SIGINT, and the report and outputs must still be written. Copies it cannot record are
/// on the target and adopted by the next run.
pub const FINAL_COMMIT_AFTER_SIGNAL: Duration = Duration::from_millis(3500);

/// How a plan is run.
pub struct RunOptions {
    /// Tags copied at once.
    pub concurrency: usize,
    /// Stop starting copies at this instant.
    pub deadline: Option<Instant>,
    /// Tags per commit.
    pub commit_every: usize,
}

/// Tags recorded as synced from one source: counted, not kept (the records are in the
/// store; keeping 15,000 outcomes for the report took 5 MB).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    /// Copied, never recorded before.
    pub copied: usize,
    /// Copied over another recorded digest.
    pub moved: usize,
    /// Found on the target and recorded without a copy.
    pub adopted: usize,
}

/// What a run did, per planned step.
#[derive(Debug, Default)]
pub struct RunResult {
    /// The outcome of each finished step that was not synced (failed, skipped, missing),
    /// with its source index.
    pub outcomes: Vec<(usize, Outcome)>,
    /// The synced ones, counted per source index.
    pub synced: Vec<Synced>,
    /// Steps not started (deadline or signal).
    pub not_started: Vec<Step>,
    /// Commits made.
    pub commits: Vec<Committed>,
    /// Why the run stopped early, if it did.
    pub stopped: Option<&'static str>,
    /// What made the run unable to go on (exit 3): the metadata store failed after its
    /// retries, or a registry refused the credentials. What was committed before stays.
    pub fatal: Option<String>,
    /// Tags copied or adopted whose commit a signal cut short (the next run adopts them).
    pub unrecorded: usize,
    /// Per copied index cut down by `--platforms`: (source index, the platforms dropped).
    pub dropped_platforms: Vec<(usize, Vec<String>)>,
    /// Unchanged tags whose referrers were read again, per source index.
    pub rechecked: Vec<Rechecked>,
    /// Re-reads of referrers that failed.
    pub referrer_failures: Vec<RecheckFailure>,
}

impl RunResult {
    /// Keeps `outcome` for the report: a synced tag as a count, anything else whole.
    pub fn note(&mut self, source: usize, outcome: Outcome) {
        match &outcome {
            Outcome::Referrers { added, .. } => {
                if self.rechecked.len() <= source {
                    self.rechecked.resize(source + 1, Rechecked::default());
                }
                self.rechecked[source].read += 1;
                self.rechecked[source].added += added;
                return;
            }
            Outcome::ReferrersChecked { .. } => return,
            _ => {}
        }
        let Outcome::Synced {
            copied, previous, ..
        } = &outcome
        else {
            self.outcomes.push((source, outcome));
            return;
        };
        if self.synced.len() <= source {
            self.synced.resize(source + 1, Synced::default());
        }
        let counts = &mut self.synced[source];
        match (copied, previous) {
            (false, _) => counts.adopted += 1,
            (true, Some(_)) => counts.moved += 1,
            (true, None) => counts.copied += 1,
        }
    }
}

fn outcome_of(step: &Step, result: Result<Copied, CopyError>, at: String) -> Outcome {
    let c = &step.candidate;
    match result {
        Err(e) if e.skip_reason().is_some() => Outcome::Skipped {
            image: c.image.to_string(),
            tag: c.tag.to_string(),
            digest: c.digest.clone(),
            reason: e.skip_reason().unwrap_or_default().to_string(),
            at,
        },
        Ok(copied) => Outcome::Synced {
            image: c.image.to_string(),
            tag: c.tag.to_string(),
            target: c.target.to_string(),
            record: TagRecord {
                deleted_upstream_at: None,
                pruned_at: None,
                digest: Some(copied.digest),
                source_digest: copied.source_digest,
                media_type: copied.media_type,
                platforms: copied.platforms,
                referrers: copied.referrers,
                referrer_tags: copied.referrer_mark,
                dropped_platforms: copied.dropped,
                synced_at: at,
            },
            previous: step.previous.clone(),
            copied: step.reason != Reason::Adopt,
        },
        Err(error) => Outcome::Failed {
            image: c.image.to_string(),
            tag: c.tag.to_string(),
            error: error.to_string(),
            at,
        },
    }
}

/// Accumulates outcomes and commits every `commit_every` of them; many recorded at once
/// (adoptions) go in a few commits bounded by size (`Recorder::commit_bulk`). Every
/// commit ends at the latest `FINAL_COMMIT_AFTER_SIGNAL` after a signal, and after the
/// store failed for good nothing more is tried.
struct Batcher<'a, M> {
    recorder: &'a Recorder<M>,
    stop: &'a StopFlag,
    every: usize,
    pending: Vec<(usize, Outcome)>,
    result: RunResult,
    /// The store failed after its retries (`result.fatal` says how).
    broken: bool,
}

impl<M: MetadataStore> Batcher<'_, M> {
    async fn push(&mut self, source: usize, outcome: Outcome) {
        self.hold(source, outcome);
        if self.pending.len() >= self.every {
            self.flush().await;
        }
    }

    /// Adds `outcome` to the pending batch without committing it yet: the run's last
    /// batch waits for what the run records after its copies (`run::recheck`), so that
    /// goes into the same commit.
    fn hold(&mut self, source: usize, outcome: Outcome) {
        self.pending.push((source, outcome.clone()));
        self.result.note(source, outcome);
    }

    /// Runs a commit unless a signal came `FINAL_COMMIT_AFTER_SIGNAL` ago; `None` when it
    /// was cut (its tags are on the target; the next run adopts them).
    async fn bounded<T>(
        stop: &StopFlag,
        commit: impl Future<Output = Result<T, StoreError>>,
    ) -> Option<Result<T, StoreError>> {
        let window = async {
            stop.cancelled().await;
            tokio::time::sleep(FINAL_COMMIT_AFTER_SIGNAL).await;
        };
        tokio::select! {
            done = commit => Some(done),
            _ = window => None,
        }
    }

    fn failed(&mut self, error: StoreError) {
        self.broken = true;
        if let StoreError::Incomplete { committed, .. } = &error {
            self.result.commits.clone_from(committed);
        }
        self.result.fatal.get_or_insert(error.to_string());
    }

    fn cut(&mut self, tags: usize) {
        tracing::warn!(
            "the commit of {tags} tag(s) did not finish within {FINAL_COMMIT_AFTER_SIGNAL:?} of the signal; they are on the target and the next run adopts them"
        );
        self.result.unrecorded += tags;
    }

    /// Records `outcomes` in bulk: a few large commits, whatever `--commit-every` is.
    async fn push_bulk(&mut self, outcomes: Vec<(usize, Outcome)>) {
        self.flush().await;
        if self.broken || outcomes.is_empty() {
            return;
        }
        let (recorder, stop) = (self.recorder, self.stop);
        let before = self.result.commits.clone();
        let committed = Self::bounded(
            stop,
            recorder.commit_bulk(&outcomes, jiff::Timestamp::now()),
        )
        .await;
        let count = outcomes.len();
        for (source, outcome) in outcomes {
            self.result.note(source, outcome);
        }
        match committed {
            Some(Ok(commits)) => self.result.commits.extend(commits),
            Some(Err(e)) => self.failed(e.incomplete(before, 0)),
            None => self.cut(count),
        }
    }

    /// Commits the pending batch; a failure says what this run committed before it.
    async fn flush(&mut self) {
        if self.pending.is_empty() || self.broken {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        // The tags in it (a namespace's referrers schedule is none).
        let tags = batch
            .iter()
            .filter(|(_, o)| !matches!(o, Outcome::ReferrersChecked { .. }))
            .count();
        let (recorder, stop) = (self.recorder, self.stop);
        match Self::bounded(stop, recorder.commit(&batch, jiff::Timestamp::now())).await {
            Some(Ok(Some(commit))) => {
                tracing::info!("recorded: {}", commit.message);
                self.result.commits.push(commit);
            }
            Some(Ok(None)) => {}
            Some(Err(e)) => {
                let before = self.result.commits.clone();
                self.failed(e.incomplete(before, tags));
            }
            None => self.cut(tags),
        }
    }
}

/// The outcomes settled without a copy: the plan's skips (no request at all), then the
/// adoptions, each adopted index with its platforms read from the source (one GET by
/// digest; a single image's platform would cost a manifest and a config read, so not).
async fn without_copy<S: Registry + 'static>(
    plan: &Plan,
    sources: &[Arc<S>],
    concurrency: usize,
) -> Vec<(usize, Outcome)> {
    let mut outcomes = Vec::new();
    for skip in &plan.skip {
        let c = &skip.candidate;
        tracing::warn!("{}:{}: skipped: {}", c.source_repo, c.tag, skip.reason);
        let outcome = Outcome::Skipped {
            image: c.image.to_string(),
            tag: c.tag.to_string(),
            digest: c.digest.clone(),
            reason: skip.reason.clone(),
            at: now_utc(),
        };
        outcomes.push((c.source, outcome));
    }
    let adopted: Vec<(usize, Outcome)> = futures_util::stream::iter(&plan.adopt)
        .map(|step| async move {
            let c = &step.candidate;
            let platforms = match step.media_type.as_deref() {
                Some(media_type) if is_index(media_type) => {
                    index_platforms(sources[c.source].as_ref(), &c.source_repo, &c.digest).await
                }
                _ => Vec::new(),
            };
            let copied = Copied {
                digest: c.digest.clone(),
                source_digest: None,
                media_type: step.media_type.clone().unwrap_or_default(),
                platforms,
                dropped: Vec::new(),
                children: Vec::new(),
                referrers: Vec::new(),
                referrer_mark: None,
            };
            (c.source, outcome_of(step, Ok(copied), now_utc()))
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    outcomes.extend(adopted);
    outcomes
}

/// The copies not started yet, each handed out once. The queue gives its memory back as
/// it empties: a plan of 15,000 tags is ≈ 3.3 MB of steps, which a run held to its last
/// batch, where `images.json` is largest (issue 14).
struct Queue(std::collections::VecDeque<Step>);

impl Queue {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn next(&mut self) -> Option<Step> {
        let step = self.0.pop_front()?;
        // Halved: the steps left move to the front and the rest is freed (a shrinking
        // realloc stays in place); the moves add up to fewer than the steps.
        if self.0.len() < self.0.capacity() / 2 && self.0.capacity() > 64 {
            self.0.shrink_to_fit();
        }
        Some(step)
    }
}

/// Why a copy stops the whole run: a registry refused the credentials (SPEC §8, exit 3).
/// Every later copy would fail the same way, so none is started.
fn stops_the_run(error: &CopyError) -> bool {
    matches!(error, CopyError::Registry(e) if e.is_credentials_refused())
}

/// Runs `plan`: adopted tags are recorded, planned copies are made (each by the copier of
/// its source's target, `copiers[source]`). A store that fails
/// after its retries, or credentials a registry refuses, end the run early with
/// `RunResult::fatal` set; what was committed before stays committed. The plan's copies
/// are taken out of it.
pub async fn execute<S, T, M>(
    plan: &mut Plan,
    sources: &[Arc<S>],
    copiers: &[Arc<Copier<T>>],
    recorder: &Recorder<M>,
    options: &RunOptions,
    stop: &StopFlag,
    progress: &Progress,
) -> RunResult
where
    S: Registry + 'static,
    T: Registry + 'static,
    M: MetadataStore,
{
    // Taken out of the plan: the run frees the steps as they start; a run's report counts
    // what it did not start (`not_started`), not the plan's copies.
    let copy = std::mem::take(&mut plan.copy);
    let plan = &*plan;
    let mut batcher = Batcher {
        recorder,
        stop,
        every: options.commit_every,
        pending: Vec::new(),
        result: RunResult::default(),
        broken: false,
    };
    // Reading adopted indexes' platforms takes a while on a first run: a signal skips it
    // (the adoptions are found again next run).
    let settled = tokio::select! {
        biased;
        _ = stop.cancelled() => Vec::new(),
        settled = without_copy(plan, sources, options.concurrency) => settled,
    };
    batcher.push_bulk(settled).await;
    if batcher.broken {
        batcher.result.not_started = copy;
        return batcher.result;
    }
    // Cancelled by a signal (through `stop`) or by a fatal error of this run.
    let cancel = stop.child_token();
    let mut queue = Queue(copy.into());
    let mut running = JoinSet::new();
    loop {
        while running.len() < options.concurrency.max(1) && queue.len() > 0 {
            if cancel.is_cancelled() {
                break;
            }
            if options.deadline.is_some_and(|d| Instant::now() >= d) {
                batcher.result.stopped = Some("deadline");
                break;
            }
            let Some(step) = queue.next() else { break };
            let source = step.candidate.source;
            let (copier, src) = (copiers[source].clone(), sources[source].clone());
            let cancel = cancel.clone();
            running.spawn(async move {
                let c = &step.candidate;
                let copy = async {
                    let mut copied = copier
                        .copy_tag(&src, &c.source_repo, &c.target.path, &c.tag)
                        .await?;
                    // Its referrers, and its children's: a failure fails the tag, which
                    // is then copied again (its blobs are there) with them next run.
                    let place = Place {
                        src: &src,
                        src_repo: &c.source_repo,
                        dst_repo: &c.target.path,
                        tags: &c.referrer_tags,
                    };
                    let mut subjects = vec![
                        copied
                            .source_digest
                            .clone()
                            .unwrap_or(copied.digest.clone()),
                    ];
                    subjects.extend(copied.children.iter().cloned());
                    let known = std::collections::HashSet::new();
                    copied.referrers = copier
                        .copy_referrers_chosen(&place, subjects, &known)
                        .await?;
                    if copier.copies_referrers() {
                        copied.referrer_mark =
                            crate::referrers::recheck::mark(&c.digest, &c.referrer_tags);
                    }
                    Ok::<_, CopyError>(copied)
                };
                // A cancelled copy is dropped where it stands: its tag is not recorded
                // (whatever reached the target is adopted by the next run).
                let result = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => None,
                    result = copy => Some(result),
                };
                (step, result)
            });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (step, result) = joined.expect("copy tasks do not panic");
        let Some(result) = result else {
            batcher.result.not_started.push(step);
            continue;
        };
        match &result {
            Ok(copied) if !copied.dropped.is_empty() => {
                let source = step.candidate.source;
                let dropped = copied.dropped.clone();
                batcher.result.dropped_platforms.push((source, dropped));
                progress.done(&format!("{}:{}", step.candidate.target, step.candidate.tag));
            }
            Ok(_) => progress.done(&format!("{}:{}", step.candidate.target, step.candidate.tag)),
            Err(e) if e.skip_reason().is_some() => {
                tracing::warn!(
                    "{}:{}: skipped: {e}",
                    step.candidate.source_repo,
                    step.candidate.tag
                );
                progress.done("skipped");
            }
            Err(e) => {
                tracing::error!("{}:{}: {e}", step.candidate.source_repo, step.candidate.tag);
                progress.done("failed");
                if stops_the_run(e) && batcher.result.fatal.is_none() {
                    batcher.result.fatal = Some(e.to_string());
                    cancel.cancel();
                }
            }
        }
        let outcome = outcome_of(&step, result, now_utc());
        let stopping =
            cancel.is_cancelled() || options.deadline.is_some_and(|d| Instant::now() >= d);
        let last = running.is_empty() && (queue.len() == 0 || stopping);
        match last && plan.recheck.is_empty() {
            true => batcher.hold(step.candidate.source, outcome),
            false => batcher.push(step.candidate.source, outcome).await,
        }
        if batcher.broken {
            cancel.cancel();
        }
    }
    if !batcher.broken {
        recheck::recheck_referrers(plan, sources, copiers, options, &cancel, &mut batcher).await;
    }
    if stop.is_cancelled() {
        batcher.result.stopped = Some("signal");
    }
    batcher.result.not_started.extend(queue.0);
    batcher.flush().await;
    batcher.result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synced(copied: bool, previous: Option<&str>) -> Outcome {
        let digest = |c: &str| format!("sha256:{}", c.repeat(64)).parse().unwrap();
        Outcome::Synced {
            image: "a".into(),
            tag: "1".into(),
            target: "t.io/m/a".into(),
            record: TagRecord {
                deleted_upstream_at: None,
                pruned_at: None,
                digest: Some(digest("a")),
                media_type: String::new(),
                platforms: Vec::new(),
                referrers: Vec::new(),
                synced_at: "2026-12-01T00:00:00Z".into(),
                ..TagRecord::default()
            },
            previous: previous.map(digest),
            copied,
        }
    }

    #[test]
    fn synced_tags_are_counted_per_source_and_the_rest_kept_whole() {
        let mut result = RunResult::default();
        result.note(1, synced(true, None));
        result.note(1, synced(true, Some("b")));
        result.note(1, synced(false, None));
        result.note(0, synced(true, None));
        let failed = Outcome::Failed {
            image: "a".into(),
            tag: "2".into(),
            error: "HTTP 500".into(),
            at: "2026-12-01T00:00:00Z".into(),
        };
        result.note(0, failed.clone());
        let one = Synced {
            copied: 1,
            moved: 0,
            adopted: 0,
        };
        let three = Synced {
            copied: 1,
            moved: 1,
            adopted: 1,
        };
        assert_eq!(result.synced, [one, three]);
        assert_eq!(result.outcomes, [(0, failed)]);
    }
}

//! Executes a plan: adoptions, then copies with `Limits::tags` in flight, recorded in
//! batches of `--commit-every`, stopping new copies at the deadline or on SIGINT/SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures_util::StreamExt;
use tokio::task::JoinSet;

use crate::copy::{Copied, Copier, CopyError, index_platforms};
use crate::metadata::record::{Outcome, TagRecord, now_utc};
use crate::metadata::{Committed, MetadataStore, Recorder, StoreError};
use crate::oci::Registry;
use crate::oci::manifest::is_index;
use crate::plan::{Plan, Reason, Step};
use crate::progress::Progress;

/// Set by a signal handler: stop starting copies, finish and record the running ones.
pub type StopFlag = Arc<AtomicBool>;

/// How a plan is run.
pub struct RunOptions {
    /// Tags copied at once.
    pub concurrency: usize,
    /// Stop starting copies at this instant.
    pub deadline: Option<Instant>,
    /// Tags per commit.
    pub commit_every: usize,
}

/// What a run did, per planned step.
#[derive(Debug, Default)]
pub struct RunResult {
    /// Each finished step's outcome, with its source index.
    pub outcomes: Vec<(usize, Outcome)>,
    /// Steps not started (deadline or signal).
    pub not_started: Vec<Step>,
    /// Commits made.
    pub commits: Vec<Committed>,
    /// Why the run stopped early, if it did.
    pub stopped: Option<&'static str>,
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
                digest: Some(copied.digest),
                media_type: copied.media_type,
                platforms: copied.platforms,
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

/// Accumulates outcomes and commits every `commit_every` of them.
struct Batcher<'a, M> {
    recorder: &'a Recorder<M>,
    every: usize,
    pending: Vec<(usize, Outcome)>,
    result: RunResult,
}

impl<M: MetadataStore> Batcher<'_, M> {
    async fn push(&mut self, source: usize, outcome: Outcome) -> Result<(), StoreError> {
        self.pending.push((source, outcome.clone()));
        self.result.outcomes.push((source, outcome));
        if self.pending.len() >= self.every {
            self.flush().await
        } else {
            Ok(())
        }
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        let batch = std::mem::take(&mut self.pending);
        if let Some(commit) = self.recorder.commit(&batch, jiff::Timestamp::now()).await? {
            tracing::info!("recorded: {}", commit.message);
            self.result.commits.push(commit);
        }
        Ok(())
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
                media_type: step.media_type.clone().unwrap_or_default(),
                platforms,
            };
            (c.source, outcome_of(step, Ok(copied), now_utc()))
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    outcomes.extend(adopted);
    outcomes
}

/// Runs `plan`: adopted tags are recorded, planned copies are made.
pub async fn execute<S, T, M>(
    plan: &Plan,
    sources: &[Arc<S>],
    copier: Arc<Copier<T>>,
    recorder: &Recorder<M>,
    options: &RunOptions,
    stop: &StopFlag,
    progress: &Progress,
) -> Result<RunResult, StoreError>
where
    S: Registry + 'static,
    T: Registry + 'static,
    M: MetadataStore,
{
    let mut batcher = Batcher {
        recorder,
        every: options.commit_every,
        pending: Vec::new(),
        result: RunResult::default(),
    };
    for (source, outcome) in without_copy(plan, sources, options.concurrency).await {
        batcher.push(source, outcome).await?;
    }
    let mut queue = plan.copy.iter();
    let mut running = JoinSet::new();
    loop {
        while running.len() < options.concurrency.max(1) && queue.len() > 0 {
            if stop.load(Ordering::SeqCst) {
                batcher.result.stopped = Some("signal");
                break;
            }
            if options.deadline.is_some_and(|d| Instant::now() >= d) {
                batcher.result.stopped = Some("deadline");
                break;
            }
            let Some(step) = queue.next() else { break };
            let (copier, src) = (copier.clone(), sources[step.candidate.source].clone());
            let step = step.clone();
            running.spawn(async move {
                let c = &step.candidate;
                let result = copier
                    .copy_tag(&src, &c.source_repo, &c.target.path, &c.tag)
                    .await;
                (step, result)
            });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (step, result) = joined.expect("copy tasks do not panic");
        match &result {
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
            }
        }
        batcher
            .push(step.candidate.source, outcome_of(&step, result, now_utc()))
            .await?;
    }
    batcher.result.not_started = queue.cloned().collect();
    batcher.flush().await?;
    Ok(batcher.result)
}

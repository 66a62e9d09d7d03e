//! Executes a plan: adoptions, then copies with `Limits::tags` in flight, recorded in
//! batches of `--commit-every`, stopping new copies at the deadline or on SIGINT/SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::task::JoinSet;

use crate::copy::Copier;
use crate::metadata::record::{Outcome, TagRecord, now_utc};
use crate::metadata::{Committed, MetadataStore, Recorder, StoreError};
use crate::oci::Registry;
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

fn outcome_of(step: &Step, result: Result<crate::copy::Copied, String>, at: String) -> Outcome {
    let c = &step.candidate;
    match result {
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
            error,
            at,
        },
    }
}

/// Accumulates outcomes and commits every `commit_every` of them; many recorded at once
/// (adoptions) go in a few commits bounded by size (`Recorder::commit_bulk`).
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

    /// Records `outcomes` in bulk: a few large commits, whatever `--commit-every` is.
    async fn push_bulk(&mut self, outcomes: Vec<(usize, Outcome)>) -> Result<(), StoreError> {
        self.flush().await?;
        let committed = self
            .recorder
            .commit_bulk(&outcomes, jiff::Timestamp::now())
            .await;
        self.result.outcomes.extend(outcomes);
        match committed {
            Ok(commits) => {
                self.result.commits.extend(commits);
                Ok(())
            }
            Err(e) => Err(e.incomplete(self.result.commits.clone(), 0)),
        }
    }

    /// Commits the pending batch; a failure says what this run committed before it.
    async fn flush(&mut self) -> Result<(), StoreError> {
        let batch = std::mem::take(&mut self.pending);
        match self.recorder.commit(&batch, jiff::Timestamp::now()).await {
            Ok(Some(commit)) => {
                tracing::info!("recorded: {}", commit.message);
                self.result.commits.push(commit);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e.incomplete(self.result.commits.clone(), batch.len())),
        }
    }
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
    let adopted = plan.adopt.iter().map(|step| {
        let c = &step.candidate;
        let copied = crate::copy::Copied {
            digest: c.digest.clone(),
            media_type: step.media_type.clone().unwrap_or_default(),
            platforms: Vec::new(),
        };
        (c.source, outcome_of(step, Ok(copied), now_utc()))
    });
    batcher.push_bulk(adopted.collect()).await?;
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
                (step, result.map_err(|e| e.to_string()))
            });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (step, result) = joined.expect("copy tasks do not panic");
        match &result {
            Ok(_) => progress.done(&format!("{}:{}", step.candidate.target, step.candidate.tag)),
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

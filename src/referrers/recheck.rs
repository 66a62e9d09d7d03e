//! When an unchanged tag's referrers are read again: at once when the listing shows its
//! referrer tags changed (free: the listing is read anyway), else once every
//! `--referrers-recheck`, each tag at its own phase of that period, so the re-reads of a
//! namespace spread evenly over the runs instead of coming all at once. Pure functions.

use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::{ListedTag, tags_of};
use crate::metadata::record::NamespaceRecord;
use crate::oci::manifest::is_index;
use crate::plan::{Candidate, Recheck};
use crate::reference::Digest;

/// A namespace's schedule is advanced at most this many times per period, so a run every
/// few minutes does not rewrite `images.json` for a handful of re-reads each time.
const STEPS_PER_PERIOD: u64 = 24;

/// The mark of `subject`'s referrer tags as listed, kept in its record: a short hash of
/// their names (and digests, where the listing gives them); `None` when it has none.
pub fn mark(subject: &Digest, tags: &[ListedTag]) -> Option<String> {
    let mut lines: Vec<String> = tags_of(subject, tags)
        .into_iter()
        .map(|(t, _)| match &t.digest {
            Some(digest) => format!("{}@{digest}\n", t.tag),
            None => format!("{}\n", t.tag),
        })
        .collect();
    if lines.is_empty() {
        return None;
    }
    lines.sort();
    let hash = Sha256::digest(lines.concat().as_bytes());
    Some(hex::encode(&hash[..8]))
}

/// The stretch of the schedule one run covers: a tag whose phase point falls in
/// `(from, to]` is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    from: i64,
    to: i64,
    every: i64,
}

/// What a run does about a namespace's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// The tags due by schedule this run (`None`: none).
    pub window: Option<Window>,
    /// Whether the record's `referrers_checked_through` becomes the run's start once every
    /// due tag was read: set the first time (the clock starts), and after each window.
    pub advance: bool,
}

impl Schedule {
    /// The schedule of a run starting at `now` (seconds since the epoch), for a namespace
    /// read through `through` (`None`: never). `every`: `None` or zero turns the schedule
    /// off (only listing changes and moved tags are read again).
    pub fn of(every: Option<Duration>, through: Option<i64>, now: i64) -> Schedule {
        let off = Schedule {
            window: None,
            advance: false,
        };
        let Some(every) = every.map(|e| e.as_secs() as i64).filter(|e| *e > 0) else {
            return off;
        };
        let Some(from) = through else {
            return Schedule {
                window: None,
                advance: true,
            };
        };
        let step = (every / STEPS_PER_PERIOD as i64).max(1);
        if now - from < step {
            return off;
        }
        Schedule {
            window: Some(Window {
                from,
                to: now,
                every,
            }),
            advance: true,
        }
    }
}

impl Window {
    /// Whether the tag keyed `key` (`image:tag`) is due: its phase point of the period
    /// falls in the window. A window of a whole period or more covers every tag.
    pub fn covers(&self, key: &str) -> bool {
        if self.to - self.from >= self.every {
            return true;
        }
        let phase = (phase_of(key) % self.every as u64) as i64;
        (self.to - phase).div_euclid(self.every) > (self.from - phase).div_euclid(self.every)
    }
}

/// A stable, evenly spread number for a key (the first 8 bytes of its SHA-256).
fn phase_of(key: &str) -> u64 {
    let hash = Sha256::digest(key.as_bytes());
    u64::from_be_bytes(hash[..8].try_into().expect("8 bytes"))
}

/// Why an unchanged tag's referrers are read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// The listing shows its referrer tags changed (a new `.sig`, a fallback index
    /// re-pushed), or its record has no mark yet while the listing shows some.
    Listing,
    /// Its turn of `--referrers-recheck` came.
    Schedule,
}

/// Whether the referrers of an unchanged tag keyed `key` (`image:tag`), of source digest
/// `subject`, are read again: the listing's mark against the recorded one, then the
/// schedule's window.
pub fn due(
    key: &str,
    subject: &Digest,
    listed: &[ListedTag],
    recorded_mark: Option<&str>,
    window: Option<&Window>,
) -> Option<Why> {
    if mark(subject, listed).as_deref() != recorded_mark {
        return Some(Why::Listing);
    }
    window.filter(|w| w.covers(key)).map(|_| Why::Schedule)
}

/// [`due`] for a listed candidate its record shows mirrored as listed. By schedule only
/// where something can have come unseen: the source has (or may have) the referrers API,
/// or the tag has referrer tags (a fallback index re-pushed under the same name shows in
/// no listing without digests) or referrers. Without either, a new referrer makes a new
/// tag, which the listing shows.
pub fn due_for(c: &Candidate, record: &NamespaceRecord, window: Option<&Window>) -> Option<Why> {
    let t = record
        .images
        .get(c.image.as_str())?
        .tags
        .get(c.tag.as_str())?;
    let unseen =
        record.referrers_api != Some(false) || t.referrer_tags.is_some() || !t.referrers.is_empty();
    let key = format!("{}:{}", c.image, c.tag);
    let window = window.filter(|_| unseen);
    due(
        &key,
        &c.digest,
        &c.referrer_tags,
        t.referrer_tags.as_deref(),
        window,
    )
}

/// Each record's schedule for a run starting at `now`, under its source's period
/// (`every`: its `referrers-recheck`, `None` when off).
pub fn schedules(
    records: &[NamespaceRecord],
    every: &[Option<Duration>],
    now: jiff::Timestamp,
) -> Vec<Schedule> {
    records
        .iter()
        .zip(every)
        .map(|(r, &every)| {
            let through = r
                .referrers_checked_through
                .as_deref()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_second());
            Schedule::of(every, through, now.as_second())
        })
        .collect()
}

/// The re-reads among the listed candidates (those the records show mirrored as listed,
/// per `unchanged`, and due), and per source what to record as its schedule's new start
/// (`now`) once they are done: the first time, or when a tag was due by schedule (a
/// window that held no tag's turn is kept open, so no turn is skipped).
pub fn plan_rechecks(
    candidates: &[Candidate],
    records: &[NamespaceRecord],
    schedules: &[Schedule],
    unchanged: impl Fn(&Candidate, &NamespaceRecord) -> bool,
    now: &str,
) -> (Vec<Recheck>, Vec<Option<String>>) {
    let rechecks: Vec<Recheck> = candidates
        .iter()
        .filter(|c| unchanged(c, &records[c.source]))
        .filter_map(|c| {
            let record = &records[c.source];
            let window = schedules.get(c.source).and_then(|s| s.window);
            let why = due_for(c, record, window.as_ref())?;
            Some(recheck_of(c, record, why))
        })
        .collect();
    let through = schedules
        .iter()
        .enumerate()
        .map(|(source, s)| {
            let turn = rechecks
                .iter()
                .any(|r| r.candidate.source == source && r.why == Why::Schedule);
            let moves = match s.window {
                None => s.advance,
                Some(_) => turn,
            };
            moves.then(|| now.to_string())
        })
        .collect();
    (rechecks, through)
}

/// The re-read of a due candidate: what its record knows (referrers, an index's digest
/// on the target).
pub fn recheck_of(c: &Candidate, record: &NamespaceRecord, why: Why) -> Recheck {
    let t = record
        .images
        .get(c.image.as_str())
        .and_then(|i| i.tags.get(c.tag.as_str()));
    Recheck {
        candidate: c.clone(),
        why,
        known: t.map(|t| t.referrers.clone()).unwrap_or_default(),
        index: t
            .filter(|t| is_index(&t.media_type))
            .and_then(|t| t.digest.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn listed(names: &[&str], digest: Option<&Digest>) -> std::sync::Arc<[ListedTag]> {
        crate::referrers::sorted(names.iter().map(|n| ListedTag {
            tag: n.parse().unwrap(),
            digest: digest.cloned(),
        }))
    }

    #[test]
    fn a_mark_changes_with_the_subjects_referrer_tags_only() {
        let subject = Digest::repeat('a');
        let hex = "a".repeat(64);
        let other = format!("sha256-{}", "b".repeat(64));
        let fallback = format!("sha256-{hex}");
        let sig = format!("sha256-{hex}.sig");
        assert_eq!(mark(&subject, &listed(&[&other], None)), None);
        let one = mark(&subject, &listed(&[&fallback, &other], None));
        assert!(one.is_some());
        assert_eq!(one, mark(&subject, &listed(&[&fallback], None)));
        let two = mark(&subject, &listed(&[&sig, &fallback], None));
        assert_ne!(one, two);
        assert_eq!(two, mark(&subject, &listed(&[&fallback, &sig], None)));
        // A re-pushed tag shows where the listing gives digests (gcr).
        let re_signed = mark(&subject, &listed(&[&fallback], Some(&Digest::repeat('c'))));
        assert_ne!(one, re_signed);
    }

    #[test]
    fn a_listing_change_is_due_at_once_and_an_unchanged_one_waits_for_its_turn() {
        let subject = Digest::repeat('a');
        let tags = listed(&[&format!("sha256-{}.sig", "a".repeat(64))], None);
        let recorded = mark(&subject, &tags);
        assert_eq!(
            due("pause:3.9", &subject, &tags, recorded.as_deref(), None),
            None
        );
        assert_eq!(
            due("pause:3.9", &subject, &tags, None, None),
            Some(Why::Listing)
        );
        assert_eq!(
            due("pause:3.9", &subject, &[], recorded.as_deref(), None),
            Some(Why::Listing)
        );
        let whole_day = Schedule::of(Some(Duration::from_secs(DAY as u64)), Some(0), DAY)
            .window
            .unwrap();
        assert_eq!(
            due(
                "pause:3.9",
                &subject,
                &tags,
                recorded.as_deref(),
                Some(&whole_day)
            ),
            Some(Why::Schedule)
        );
    }

    #[test]
    fn the_schedule_starts_the_clock_then_steps_at_most_24_times_a_period() {
        let day = Some(Duration::from_secs(DAY as u64));
        assert_eq!(
            Schedule::of(day, None, 1000),
            Schedule {
                window: None,
                advance: true
            }
        );
        // Runs every 10 minutes: no window, the record stays as it is.
        let soon = Schedule::of(day, Some(1000), 1000 + 600);
        assert_eq!(soon.window, None);
        assert!(!soon.advance);
        let hour = Schedule::of(day, Some(1000), 1000 + 3600);
        assert!(hour.window.is_some() && hour.advance);
        assert_eq!(Schedule::of(None, Some(0), 10 * DAY).window, None);
        assert_eq!(
            Schedule::of(Some(Duration::ZERO), Some(0), DAY).window,
            None
        );
    }

    #[test]
    fn hourly_runs_read_each_tag_once_a_day_spread_evenly() {
        let keys: Vec<String> = (0..2400).map(|i| format!("image-{}:{i}", i % 7)).collect();
        let every = Some(Duration::from_secs(DAY as u64));
        let mut through = 5_000;
        let mut per_key = vec![0; keys.len()];
        let mut per_run = Vec::new();
        for run in 1..=48 {
            let now = 5_000 + run * 3600;
            let schedule = Schedule::of(every, Some(through), now);
            let window = schedule.window.unwrap();
            let due: Vec<usize> = (0..keys.len())
                .filter(|&i| window.covers(&keys[i]))
                .collect();
            for &i in &due {
                per_key[i] += 1;
            }
            per_run.push(due.len());
            through = now;
        }
        // Two days: every tag read exactly twice, each run about 1/24 of them.
        assert!(per_key.iter().all(|&n| n == 2), "{per_key:?}");
        assert!(
            per_run.iter().all(|&n| (50..=150).contains(&n)),
            "{per_run:?}"
        );
    }

    #[test]
    fn a_run_after_a_long_pause_reads_every_tag() {
        let every = Some(Duration::from_secs(DAY as u64));
        let window = Schedule::of(every, Some(0), 3 * DAY).window.unwrap();
        assert!((0..100).all(|i| window.covers(&format!("a:{i}"))));
    }
}

//! How many records go in one commit when a run records many at once (a first run
//! adopting an existing mirror, a legacy import, `compare`): a few large commits bounded
//! by size, not one per `--commit-every`. Pure.

use std::ops::Range;

use super::record::Outcome;

/// The most records in one bulk commit: ~15,000 adopted tags land in 6 commits.
pub const MAX_RECORDS: usize = 2_500;
/// The most record bytes one bulk commit adds (multi-platform records are larger), so
/// that a commit's blobs stay far below GitHub's request and blob sizes.
pub const MAX_BYTES: usize = 2 * 1024 * 1024;

/// The bytes `outcome` adds to the metadata: its record as JSON, about what images.json
/// and the README grow by.
pub fn weight(outcome: &Outcome) -> usize {
    serde_json::to_string(outcome).map_or(256, |s| s.len())
}

/// Splits `weights` (one per outcome, in order) into consecutive batches of at most
/// `max_records` outcomes and `max_bytes` bytes; an outcome heavier than `max_bytes` goes
/// alone.
pub fn batches(weights: &[usize], max_records: usize, max_bytes: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, &w) in weights.iter().enumerate() {
        let full = i - start >= max_records.max(1) || (i > start && bytes + w > max_bytes);
        if full {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += w;
    }
    if start < weights.len() {
        out.push(start..weights.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifteen_thousand_records_make_a_handful_of_batches() {
        let weights = vec![220; 15_000];
        let split = batches(&weights, MAX_RECORDS, MAX_BYTES);
        assert_eq!(split.len(), 6);
        assert_eq!(split.iter().map(|r| r.len()).sum::<usize>(), 15_000);
        assert!(split.windows(2).all(|w| w[0].end == w[1].start));
    }

    #[test]
    fn heavy_records_are_bounded_by_bytes() {
        let split = batches(&[400, 400, 400, 900, 100], 100, 1000);
        assert_eq!(split, [0..2, 2..3, 3..5]);
        // One record over the byte bound still goes, alone.
        assert_eq!(batches(&[5000, 10], 100, 1000), [0..1, 1..2]);
        assert_eq!(batches(&[], 100, 1000), Vec::<Range<usize>>::new());
        assert_eq!(batches(&[1, 1, 1], 2, 1000), [0..2, 2..3]);
    }
}

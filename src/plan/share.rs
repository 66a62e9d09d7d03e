//! One budget over many sources: each source first gets a fair share of the run's
//! `--process-count` (equal parts, never more than it needs or than its own cap), then
//! what the others left goes to whoever has more, in the plan's order. With one source
//! this is the head of the list, as it always was.

use super::Plan;

/// How many copies each source may make: water-filling of `budget` over `demand` (what
/// each source needs, already capped by its own share). Pure.
fn allot(demand: &[usize], budget: usize) -> Vec<usize> {
    let mut allotted = vec![0; demand.len()];
    let mut left = budget;
    loop {
        let hungry: Vec<usize> = (0..demand.len())
            .filter(|&i| allotted[i] < demand[i])
            .collect();
        let each = match hungry.len() {
            0 => break,
            n => left / n,
        };
        if each == 0 {
            break;
        }
        for i in hungry {
            let take = each.min(demand[i] - allotted[i]);
            allotted[i] += take;
            left -= take;
        }
    }
    allotted
}

/// Keeps within `budget` (`None`: no limit) the copies of `plan`, sharing it fairly
/// between sources; `caps[source]` is a source's own most (`None`: none). The rest goes
/// to `pending`, in the plan's order.
pub fn share(plan: &mut Plan, budget: Option<usize>, caps: &[Option<usize>]) {
    let mut wanted = vec![0usize; caps.len()];
    for step in &plan.copy {
        wanted[step.candidate.source] += 1;
    }
    let demand: Vec<usize> = wanted
        .iter()
        .zip(caps)
        .map(|(&w, cap)| cap.map_or(w, |c| c.min(w)))
        .collect();
    let mut allotted = match budget {
        Some(budget) => allot(&demand, budget),
        None => demand.clone(),
    };
    // Leftovers (fewer than the hungry sources): one more each, in the plan's order.
    let mut left = budget.map_or(0, |b| b.saturating_sub(allotted.iter().sum()));
    let mut extra = vec![0usize; caps.len()];
    let mut used = vec![0usize; caps.len()];
    for step in &plan.copy {
        let source = step.candidate.source;
        used[source] += 1;
        if left > 0
            && used[source] > allotted[source]
            && allotted[source] + extra[source] < demand[source]
        {
            extra[source] += 1;
            left -= 1;
        }
    }
    for (a, e) in allotted.iter_mut().zip(&extra) {
        *a += e;
    }
    let mut taken = vec![0usize; caps.len()];
    let over = super::split_off_by(&mut plan.copy, |step| {
        let source = step.candidate.source;
        let fits = taken[source] < allotted[source];
        taken[source] += usize::from(fits);
        fits
    });
    super::to_pending(plan, over);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Candidate, Reason, Step};
    use crate::reference::Repository;

    fn step(source: usize, n: usize) -> Step {
        let image = format!("i{n}");
        Step {
            candidate: Candidate {
                source,
                image: image.parse().unwrap(),
                source_repo: format!("ns{source}/{image}").parse().unwrap(),
                tag: "1".parse().unwrap(),
                digest: format!("sha256:{}", "a".repeat(64)).parse().unwrap(),
                uploaded_ms: None,
                target: Repository {
                    registry: "t.io".parse().unwrap(),
                    path: format!("m{source}/{image}").parse().unwrap(),
                },
                media_type: None,
                referrer_tags: std::sync::Arc::from(Vec::new()),
            },
            reason: Reason::New,
            previous: None,
            failed_before: false,
            media_type: None,
            retarget_from: None,
        }
    }

    /// A plan whose copies come from sources in this order (the plan's order).
    fn plan_of(sources: &[usize]) -> Plan {
        Plan {
            copy: sources
                .iter()
                .enumerate()
                .map(|(n, &s)| step(s, n))
                .collect(),
            ..Plan::default()
        }
    }

    fn counts(plan: &Plan, sources: usize) -> (Vec<usize>, Vec<usize>) {
        let mut copy = vec![0; sources];
        let mut pending = vec![0; sources];
        plan.copy.iter().for_each(|s| copy[s.candidate.source] += 1);
        plan.pending
            .iter()
            .for_each(|s| pending[s.candidate.source] += 1);
        (copy, pending)
    }

    #[test]
    fn water_filling_gives_equal_parts_then_what_the_small_ones_leave() {
        assert_eq!(allot(&[10, 10, 10], 9), [3, 3, 3]);
        assert_eq!(allot(&[1, 10, 10], 9), [1, 4, 4]);
        assert_eq!(allot(&[1, 2, 100], 30), [1, 2, 27]);
        assert_eq!(allot(&[5, 5], 100), [5, 5]);
        assert_eq!(allot(&[10, 10, 10], 2), [0, 0, 0], "leftovers go by order");
    }

    #[test]
    fn one_source_takes_the_head_of_its_list() {
        let mut plan = plan_of(&[0, 0, 0, 0]);
        share(&mut plan, Some(3), &[None]);
        assert_eq!(counts(&plan, 1), (vec![3], vec![1]));
        assert_eq!(plan.pending[0].candidate.image.as_str(), "i3");
    }

    #[test]
    fn a_busy_source_cannot_starve_the_others() {
        // Source 0 has the newest uploads (first in the plan's order) and 20 tags.
        let mut order = vec![0; 20];
        order.extend([1, 1, 2]);
        let mut plan = plan_of(&order);
        share(&mut plan, Some(10), &[None, None, None]);
        assert_eq!(counts(&plan, 3), (vec![7, 2, 1], vec![13, 0, 0]));
        // The order of the plan is kept in both lists.
        let ids: Vec<_> = plan
            .copy
            .iter()
            .map(|s| s.candidate.image.to_string())
            .collect();
        assert_eq!(ids[..7], ["i0", "i1", "i2", "i3", "i4", "i5", "i6"]);
    }

    #[test]
    fn leftovers_go_in_plan_order_and_a_source_never_passes_its_own_cap() {
        let mut plan = plan_of(&[1, 0, 2, 0, 1, 2, 0, 1, 2]);
        share(&mut plan, Some(4), &[None, None, None]);
        // 1 each, then the one left over to the first waiting tag: source 0's second.
        assert_eq!(counts(&plan, 3).0, [2, 1, 1]);
        let mut capped = plan_of(&[0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
        share(&mut capped, Some(8), &[Some(2), None]);
        assert_eq!(counts(&capped, 2), (vec![2, 5], vec![3, 0]));
        let mut unlimited = plan_of(&[0, 0, 0, 1]);
        share(&mut unlimited, None, &[Some(1), None]);
        assert_eq!(counts(&unlimited, 2), (vec![1, 1], vec![2, 0]));
    }
}

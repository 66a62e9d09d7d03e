//! Image and tag selection (pure): include/exclude regexes, the seeds' legacy preset, and
//! `--latest N`. Each verdict names the filter that removed the name, for `gcrsync test`.
//! [`Filters::may_pass_below`] tells, exactly, whether any image under a path can pass, so
//! that a listing never asks for the tags of a repository no filter lets through.

use std::cmp::{Ordering, Reverse};

use regex::Regex;

/// The filters of one run, compiled once from the settings.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// Keep only images matching this (unanchored) regex.
    pub include_images: Option<Regex>,
    /// Drop images matching this regex.
    pub exclude_images: Option<Regex>,
    /// Keep only tags matching this regex.
    pub include_tags: Option<Regex>,
    /// Drop tags matching this regex.
    pub exclude_tags: Option<Regex>,
    /// latelee's substring rules (SPEC §3 `--filter-preset legacy`).
    pub legacy: bool,
    /// Keep only the newest N tags of each image.
    pub latest: Option<usize>,
}

/// The filter that removed a name (its option name).
pub type Removed = &'static str;

/// The seeds' legacy preset drops images whose path contains one of these.
const LEGACY_IMAGE: [&str; 3] = ["-arm", "-ppc", "-s390x"];

impl Filters {
    /// `Ok` when an image (path relative to its namespace) is mirrored.
    pub fn image(&self, image: &str) -> Result<(), Removed> {
        if self.legacy && LEGACY_IMAGE.iter().any(|s| image.contains(s)) {
            return Err("filter-preset");
        }
        if !matches(&self.include_images, image, true) {
            return Err("include-images");
        }
        if matches(&self.exclude_images, image, false) {
            return Err("exclude-images");
        }
        Ok(())
    }

    /// Whether some image below `image` (a path `image/…`) could pass the image filters.
    /// Exact for every pattern a DFA can hold: the include and exclude automata are run
    /// over `image/` and then over every continuation of repository-name characters. A
    /// pattern too large for that answers `true`: the image is listed, never wrongly skipped.
    pub fn may_pass_below(&self, image: &str) -> bool {
        if self.legacy && LEGACY_IMAGE.iter().any(|s| image.contains(s)) {
            return false;
        }
        below::may_pass(
            self.include_images.as_ref().map(Regex::as_str),
            self.exclude_images.as_ref().map(Regex::as_str),
            &format!("{image}/"),
        )
        .unwrap_or(true)
    }

    /// `Ok` when a tag passes the per-tag filters (`--latest` is applied per image after).
    pub fn tag(&self, tag: &str) -> Result<(), Removed> {
        let legacy_drop = tag.len() > 12
            || ["alpha", "beta", "rc", "test"]
                .iter()
                .any(|s| tag.contains(s));
        if self.legacy && legacy_drop {
            return Err("filter-preset");
        }
        if !matches(&self.include_tags, tag, true) {
            return Err("include-tags");
        }
        if matches(&self.exclude_tags, tag, false) {
            return Err("exclude-tags");
        }
        Ok(())
    }

    /// The indexes of `tags` (name, upload time) that `--latest` keeps, in input order.
    pub fn latest_of(&self, tags: &[(&str, Option<i64>)]) -> Vec<usize> {
        let Some(n) = self.latest else {
            return (0..tags.len()).collect();
        };
        let mut ranked: Vec<usize> = (0..tags.len()).collect();
        ranked.sort_by(|&a, &b| newest_first(tags[a], tags[b]));
        ranked.truncate(n);
        ranked.sort_unstable();
        ranked
    }
}

fn matches(regex: &Option<Regex>, text: &str, if_unset: bool) -> bool {
    regex.as_ref().map_or(if_unset, |r| r.is_match(text))
}

/// Reachability over the product of the include and exclude DFAs.
mod below {
    use std::collections::{HashMap, HashSet, VecDeque};
    use std::sync::{Arc, Mutex, OnceLock};

    use regex_automata::dfa::{Automaton, dense};
    use regex_automata::util::primitives::StateID;
    use regex_automata::util::start;
    use regex_automata::{Anchored, MatchKind};

    /// The bytes a repository path is made of (the distribution grammar: lowercase).
    const NAME_BYTES: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789._-/";
    /// Product states explored before giving up (and answering "maybe").
    const MAX_STATES: usize = 20_000;

    /// One regex as an unanchored DFA, with whether it has matched yet (`is_match` semantics:
    /// once a match is seen, the text matches whatever follows).
    struct Side {
        dfa: dense::DFA<Vec<u32>>,
    }

    impl Side {
        fn new(pattern: &str) -> Option<Side> {
            let config = dense::Config::new()
                .match_kind(MatchKind::All)
                // Repository names are ASCII, where this heuristic is exact.
                .unicode_word_boundary(true)
                .dfa_size_limit(Some(8 << 20))
                .determinize_size_limit(Some(8 << 20));
            let dfa = dense::Builder::new()
                .configure(config)
                .build(pattern)
                .ok()?;
            Some(Side { dfa })
        }

        fn start(&self) -> Option<StateID> {
            let config = start::Config::new().anchored(Anchored::No);
            self.dfa.start_state(&config).ok()
        }

        /// The state after `byte` and whether a match was seen; `None` on a quit state.
        fn step(
            &self,
            (id, matched): (StateID, bool),
            byte: Option<u8>,
        ) -> Option<(StateID, bool)> {
            let next = match byte {
                Some(b) => self.dfa.next_state(id, b),
                None => self.dfa.next_eoi_state(id),
            };
            if self.dfa.is_quit_state(next) {
                return None;
            }
            Some((next, matched || self.dfa.is_match_state(next)))
        }

        fn dead(&self, (id, _): (StateID, bool)) -> bool {
            self.dfa.is_dead_state(id)
        }
    }

    type Pair = (Option<(StateID, bool)>, Option<(StateID, bool)>);
    type Sides = Option<(Option<Side>, Option<Side>)>;

    /// The DFAs of a pair of patterns, built once per process (a build takes about a
    /// millisecond; a gcr walk may ask about every image of a namespace).
    fn automata(include: Option<&str>, exclude: Option<&str>) -> Arc<Sides> {
        type Key = (Option<String>, Option<String>);
        static BUILT: OnceLock<Mutex<HashMap<Key, Arc<Sides>>>> = OnceLock::new();
        let key = (include.map(str::to_string), exclude.map(str::to_string));
        let mut built = BUILT
            .get_or_init(Default::default)
            .lock()
            .expect("dfa cache");
        built
            .entry(key)
            .or_insert_with(|| {
                let include = include.map(Side::new).map_or(Some(None), |s| s.map(Some));
                let exclude = exclude.map(Side::new).map_or(Some(None), |s| s.map(Some));
                Arc::new(include.zip(exclude))
            })
            .clone()
    }

    /// `Some(true)` when some `prefix + s` (s non-empty, of name bytes) matches `include`
    /// (or include is unset) and not `exclude`; `None` when a DFA cannot be built.
    pub(super) fn may_pass(
        include: Option<&str>,
        exclude: Option<&str>,
        prefix: &str,
    ) -> Option<bool> {
        let sides = automata(include, exclude);
        let (include, exclude) = sides.as_ref().as_ref()?;
        let step = |side: &Option<Side>, state: Option<(StateID, bool)>, byte: Option<u8>| match (
            side, state,
        ) {
            (Some(side), Some(state)) => side.step(state, byte).map(Some),
            _ => Some(None),
        };
        let start = |side: &Option<Side>| -> Option<Option<(StateID, bool)>> {
            match side {
                Some(s) => Some(Some((s.start()?, false))),
                None => Some(None),
            }
        };
        let mut pair: Pair = (start(include)?, start(exclude)?);
        for &b in prefix.as_bytes() {
            pair = (
                step(include, pair.0, Some(b))?,
                step(exclude, pair.1, Some(b))?,
            );
        }
        // Paths once known to fail (exclude matched, or include can no longer match) are cut.
        let hopeless = |pair: &Pair| {
            let excluded = pair.1.is_some_and(|s| s.1);
            let never_included = match (include, pair.0) {
                (Some(side), Some(s)) => !s.1 && side.dead(s),
                _ => false,
            };
            excluded || never_included
        };
        // After a match is seen the include state no longer matters: collapse it so the
        // product stays small.
        let key = |pair: &Pair| -> Pair {
            let inc = pair.0.map(|s| if s.1 { (StateID::ZERO, true) } else { s });
            (inc, pair.1)
        };
        let successors = |pair: &Pair| -> Option<Vec<Pair>> {
            let mut next = Vec::new();
            for &b in NAME_BYTES {
                let to = (
                    step(include, pair.0, Some(b))?,
                    step(exclude, pair.1, Some(b))?,
                );
                if !hopeless(&to) {
                    next.push(to);
                }
            }
            Some(next)
        };
        // `prefix` itself ends in `/` and is no image: only its continuations are checked.
        let mut seen = HashSet::new();
        let mut queue = VecDeque::new();
        if !hopeless(&pair) {
            for next in successors(&pair)? {
                if seen.insert(key(&next)) {
                    queue.push_back(next);
                }
            }
        }
        while let Some(pair) = queue.pop_front() {
            if seen.len() > MAX_STATES {
                return None;
            }
            let inc = step(include, pair.0, None)?;
            let exc = step(exclude, pair.1, None)?;
            if inc.is_none_or(|s| s.1) && !exc.is_some_and(|s| s.1) {
                return Some(true);
            }
            for next in successors(&pair)? {
                if seen.insert(key(&next)) {
                    queue.push_back(next);
                }
            }
        }
        Some(false)
    }
}

/// A lenient semantic version: `v1`, `1.2`, `1.2.3-rc.1`, `1.28.0-gke.1`.
#[derive(Debug, PartialEq, Eq)]
struct Version<'a> {
    numbers: [u64; 3],
    pre: Option<&'a str>,
}

impl Ord for Version<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        // A release sorts after its pre-releases.
        self.numbers
            .cmp(&other.numbers)
            .then_with(|| match (self.pre, other.pre) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            })
    }
}

impl PartialOrd for Version<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn version(tag: &str) -> Option<Version<'_>> {
    let bare = tag.strip_prefix('v').unwrap_or(tag);
    let bare = bare.split('+').next()?;
    let (core, pre) = match bare.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (bare, None),
    };
    let mut numbers = [0; 3];
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty() || parts.len() > 3 {
        return None;
    }
    for (slot, part) in numbers.iter_mut().zip(&parts) {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    Some(Version { numbers, pre })
}

/// Semantic versions first, highest first; then the rest by upload time, newest first;
/// then by name, so the order is total and stable.
fn newest_first(a: (&str, Option<i64>), b: (&str, Option<i64>)) -> Ordering {
    match (version(a.0), version(b.0)) {
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (va, vb) => (Reverse(va), Reverse(a.1))
            .cmp(&(Reverse(vb), Reverse(b.1)))
            .then_with(|| a.0.cmp(b.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_and_exclude_name_the_filter() {
        let f = Filters {
            include_tags: Some(Regex::new(r"^v\d").unwrap()),
            exclude_tags: Some(Regex::new("-debug$").unwrap()),
            exclude_images: Some(Regex::new("^internal/").unwrap()),
            ..Filters::default()
        };
        assert_eq!(f.tag("v1.2"), Ok(()));
        assert_eq!(f.tag("latest"), Err("include-tags"));
        assert_eq!(f.tag("v1-debug"), Err("exclude-tags"));
        assert_eq!(
            (f.image("pause"), f.image("internal/x")),
            (Ok(()), Err("exclude-images"))
        );
    }

    fn images(include: Option<&str>, exclude: Option<&str>) -> Filters {
        Filters {
            include_images: include.map(|r| Regex::new(r).unwrap()),
            exclude_images: exclude.map(|r| Regex::new(r).unwrap()),
            ..Filters::default()
        }
    }

    #[test]
    fn only_paths_no_image_below_can_pass_are_pruned() {
        // Excluded itself, but its children are not.
        let f = images(None, Some("^internal$"));
        assert!(f.image("internal").is_err() && f.may_pass_below("internal"));
        // Excluded with everything below it.
        for exclude in ["^internal", "internal(/|$)", r"^int\w+", "^internal/.*"] {
            assert!(
                !images(None, Some(exclude)).may_pass_below("internal"),
                "{exclude}"
            );
        }
        // Excluded only by its end: a child ends otherwise.
        assert!(images(None, Some("-debug$")).may_pass_below("app-debug"));
        // Not included, but a child is.
        let f = images(Some("^team/app"), None);
        assert!(f.image("team").is_err() && f.may_pass_below("team"));
        assert!(!f.may_pass_below("other") && f.may_pass_below("team/app"));
        // Included only below, but everything there is excluded.
        assert!(!images(Some("^a/"), Some("^a/")).may_pass_below("a"));
        // Include and exclude that leave a narrow way: a/keep-… passes.
        let f = images(Some("^a/"), Some("^a/[^k]|^a/k[^e]"));
        assert!(f.may_pass_below("a"));
        // A word boundary right after the prefix, and case-insensitive patterns.
        assert!(!images(None, Some(r"^gpu\b")).may_pass_below("gpu"));
        assert!(!images(Some("(?i)^KEEP"), None).may_pass_below("drop"));
        assert!(images(Some("(?i)^KEEP"), None).may_pass_below("keep"));
        assert!(Filters::default().may_pass_below("x"));
        let legacy = Filters {
            legacy: true,
            ..Filters::default()
        };
        assert!(!legacy.may_pass_below("pause-arm64") && legacy.may_pass_below("pause"));
    }

    #[test]
    fn legacy_preset_reproduces_latelee() {
        let f = Filters {
            legacy: true,
            ..Filters::default()
        };
        for dropped in [
            "master-20181217",
            "v1.0-alpha",
            "1.0-beta.1",
            "arc",
            "test",
            "1234567890123",
        ] {
            assert_eq!(f.tag(dropped), Err("filter-preset"), "{dropped}");
        }
        for kept in ["v1.10.0", "3.9", "123456789012"] {
            assert_eq!(f.tag(kept), Ok(()), "{kept}");
        }
        for dropped in ["pause-arm64", "etcd-ppc64le", "x-s390x", "kube-armhf-arm"] {
            assert_eq!(f.image(dropped), Err("filter-preset"), "{dropped}");
        }
        assert!(f.image("pause-amd64").is_ok() && f.image("zookeeper-install-3.5.0-alpha").is_ok());
    }

    #[test]
    fn latest_keeps_the_highest_versions_then_the_newest_uploads() {
        let f = Filters {
            latest: Some(3),
            ..Filters::default()
        };
        let tags = [
            ("v1.9.0", None),
            ("1.10.0-rc.1", None),
            ("latest", Some(900)),
            ("v1.10.0", None),
            ("1.2", None),
            ("nightly", Some(1000)),
        ];
        let kept: Vec<&str> = f.latest_of(&tags).into_iter().map(|i| tags[i].0).collect();
        assert_eq!(kept, ["v1.9.0", "1.10.0-rc.1", "v1.10.0"]);
        let no_versions = [("a", Some(1)), ("b", Some(3)), ("c", None), ("d", Some(2))];
        let f = Filters {
            latest: Some(2),
            ..Filters::default()
        };
        let kept: Vec<&str> = f
            .latest_of(&no_versions)
            .into_iter()
            .map(|i| no_versions[i].0)
            .collect();
        assert_eq!(kept, ["b", "d"]);
        assert_eq!(Filters::default().latest_of(&no_versions), [0, 1, 2, 3]);
    }
}

//! Image and tag selection (pure): include/exclude regexes, the seeds' legacy preset, and
//! `--latest N`. Each verdict names the filter that removed the name, for `gcrsync test`.

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

impl Filters {
    /// `Ok` when an image (path relative to its namespace) is mirrored.
    pub fn image(&self, image: &str) -> Result<(), Removed> {
        if self.legacy && ["-arm", "-ppc", "-s390x"].iter().any(|s| image.contains(s)) {
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

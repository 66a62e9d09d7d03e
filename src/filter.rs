//! Image and tag selection: include/exclude regexes and the seeds' legacy preset (pure).

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
}

impl Filters {
    /// Whether an image (path relative to its namespace) is mirrored.
    pub fn keeps_image(&self, image: &str) -> bool {
        let legacy_drop =
            self.legacy && ["-arm", "-ppc", "-s390x"].iter().any(|s| image.contains(s));
        !legacy_drop
            && matches(&self.include_images, image, true)
            && !matches(&self.exclude_images, image, false)
    }

    /// Whether a tag is mirrored.
    pub fn keeps_tag(&self, tag: &str) -> bool {
        let legacy_drop = self.legacy
            && (tag.len() > 12
                || ["alpha", "beta", "rc", "test"]
                    .iter()
                    .any(|s| tag.contains(s)));
        !legacy_drop
            && matches(&self.include_tags, tag, true)
            && !matches(&self.exclude_tags, tag, false)
    }
}

fn matches(regex: &Option<Regex>, text: &str, if_unset: bool) -> bool {
    regex.as_ref().map_or(if_unset, |r| r.is_match(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_and_exclude() {
        let f = Filters {
            include_tags: Some(Regex::new(r"^v\d").unwrap()),
            exclude_tags: Some(Regex::new("-debug$").unwrap()),
            exclude_images: Some(Regex::new("^internal/").unwrap()),
            ..Filters::default()
        };
        assert!(f.keeps_tag("v1.2") && !f.keeps_tag("latest") && !f.keeps_tag("v1-debug"));
        assert!(f.keeps_image("pause") && !f.keeps_image("internal/x"));
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
            assert!(!f.keeps_tag(dropped), "{dropped}");
        }
        for kept in ["v1.10.0", "3.9", "123456789012"] {
            assert!(f.keeps_tag(kept), "{kept}");
        }
        for dropped in ["pause-arm64", "etcd-ppc64le", "x-s390x", "kube-armhf-arm"] {
            assert!(!f.keeps_image(dropped), "{dropped}");
        }
        assert!(f.keeps_image("pause-amd64") && f.keeps_image("zookeeper-install-3.5.0-alpha"));
    }
}

//! Which referrers (signatures, attestations, SBOMs) a run copies, and how their tags look:
//! the distribution spec's fallback tag `sha256-<hex>` (an index of a subject's referrers)
//! and cosign's `sha256-<hex>.sig`, `.att` and `.sbom`. Pure functions; the copy is in
//! `copy::referrers`.

use std::str::FromStr;

use crate::reference::{Digest, Tag};

pub mod recheck;

/// A referrer tag as the listing showed it: its name, and its digest where the listing
/// gives digests (gcr's manifest map), so that a re-signed `.sig` shows without a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTag {
    /// `sha256-<hex>[.sig|.att|.sbom]`.
    pub tag: Tag,
    /// Its manifest digest, when the listing gave it.
    pub digest: Option<Digest>,
}

/// `--referrers`: none, all, or those of the listed artifact types.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Choice {
    /// Copy no referrer (referrer tags are still never copied as ordinary tags).
    None,
    /// Copy every referrer.
    #[default]
    All,
    /// Copy referrers of these artifact types only.
    Types(Vec<String>),
}

impl FromStr for Choice {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "none" => Ok(Choice::None),
            "all" | "" => Ok(Choice::All),
            list => {
                let types: Vec<String> = list
                    .split(',')
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect();
                if let Some(bad) = types.iter().find(|t| !t.contains('/')) {
                    return Err(format!(
                        "{bad:?} is not an artifact type (a media type such as application/spdx+json); use none, all, or a comma list of types"
                    ));
                }
                Ok(Choice::Types(types))
            }
        }
    }
}

impl Choice {
    /// Whether a referrer of `artifact_type` is copied.
    pub fn wants(&self, artifact_type: Option<&str>) -> bool {
        match self {
            Choice::None => false,
            Choice::All => true,
            Choice::Types(types) => artifact_type.is_some_and(|a| types.iter().any(|t| t == a)),
        }
    }

    /// Whether cosign's `.sig`/`.att`/`.sbom` tags are copied (their manifests carry no
    /// artifact type; cosign's own types stand for them).
    pub fn wants_cosign(&self, suffix: &str) -> bool {
        let kind = match suffix {
            "sig" => "application/vnd.dev.cosign.simplesigning.v1+json",
            "att" => "application/vnd.dsse.envelope.v1+json",
            _ => "application/vnd.dev.cosign.artifact.sbom.v1+json",
        };
        self.wants(Some(kind))
    }
}

/// A referrer tag: the subject's hex digest and the cosign suffix (`None`: the fallback
/// index tag itself).
pub fn referrer_tag(tag: &str) -> Option<(&str, Option<&str>)> {
    let rest = tag.strip_prefix("sha256-")?;
    let (hex, suffix) = match rest.split_once('.') {
        Some((hex, suffix)) if matches!(suffix, "sig" | "att" | "sbom") => (hex, Some(suffix)),
        Some(_) => return None,
        None => (rest, None),
    };
    let hex_ok = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    hex_ok.then_some((hex, suffix))
}

/// A repository's referrer tags as `tags_of` reads them: sorted by name.
pub fn sorted(tags: impl IntoIterator<Item = ListedTag>) -> std::sync::Arc<[ListedTag]> {
    let mut tags: Vec<ListedTag> = tags.into_iter().collect();
    tags.sort_by(|a, b| a.tag.as_str().cmp(b.tag.as_str()));
    tags.into()
}

/// The referrer tags of `subject` among a repository's referrer tags (sorted by name,
/// `sorted`): (tag, cosign suffix). Found by binary search: it runs for every listed tag
/// of the repository, and a scan made a no-op quadratic in its signed tags.
pub fn tags_of<'a>(
    subject: &Digest,
    tags: &'a [ListedTag],
) -> Vec<(&'a ListedTag, Option<&'a str>)> {
    debug_assert!(tags.is_sorted_by(|a, b| a.tag.as_str() <= b.tag.as_str()));
    let Some(hex) = subject.sha256_hex() else {
        return Vec::new();
    };
    let prefix = format!("sha256-{hex}");
    let first = tags.partition_point(|t| t.tag.as_str() < prefix.as_str());
    tags[first..]
        .iter()
        .take_while(|t| t.tag.as_str().starts_with(&prefix))
        .filter_map(|t| {
            let (h, suffix) = referrer_tag(t.tag.as_str())?;
            (h == hex).then_some((t, suffix))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_filter() {
        assert_eq!("none".parse::<Choice>(), Ok(Choice::None));
        assert_eq!("all".parse::<Choice>(), Ok(Choice::All));
        let types: Choice = "application/spdx+json, application/vnd.cncf.notary.signature"
            .parse()
            .unwrap();
        assert!(types.wants(Some("application/spdx+json")));
        assert!(!types.wants(Some("application/vnd.in-toto+json")));
        assert!(!types.wants(None));
        assert!(Choice::All.wants(None));
        assert!(!Choice::None.wants(Some("application/spdx+json")));
        assert!(
            "sig"
                .parse::<Choice>()
                .unwrap_err()
                .contains("artifact type")
        );
        assert!(Choice::All.wants_cosign("sig"));
    }

    #[test]
    fn referrer_tags_are_recognised() {
        let hex = "a".repeat(64);
        assert_eq!(
            referrer_tag(&format!("sha256-{hex}")),
            Some((hex.as_str(), None))
        );
        assert_eq!(
            referrer_tag(&format!("sha256-{hex}.sig")),
            Some((hex.as_str(), Some("sig")))
        );
        assert_eq!(referrer_tag(&format!("sha256-{hex}.other")), None);
        assert_eq!(referrer_tag("sha256-abc"), None);
        assert_eq!(referrer_tag("v1.0"), None);
        let subject: Digest = format!("sha256:{hex}").parse().unwrap();
        // In the listing's order; `sorted` puts them in the order `tags_of` searches.
        let tags = sorted(
            [
                format!("sha256-{}.sig", "0".repeat(64)),
                format!("sha256-{hex}.att"),
                format!("sha256-{}", "b".repeat(64)),
                "latest".to_string(),
                format!("sha256-{hex}"),
            ]
            .iter()
            .map(|t| ListedTag {
                tag: t.parse().unwrap(),
                digest: None,
            }),
        );
        let found: Vec<Option<&str>> = tags_of(&subject, &tags).into_iter().map(|t| t.1).collect();
        assert_eq!(found, [None, Some("att")]);
    }
}

//! `--platforms`: which platforms of a multi-arch image to mirror, and the index rebuilt
//! from the chosen children (pure). A subset can never be verbatim: the index lists its
//! children by digest, so an index of fewer children is other bytes with another digest.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;

/// One wanted platform: `os/arch` (any variant) or `os/arch/variant` (that one).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wanted {
    os: String,
    arch: String,
    variant: Option<String>,
}

/// The platforms chosen with `--platforms`, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSet(Vec<Wanted>);

impl FromStr for PlatformSet {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let mut wanted = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let parts: Vec<&str> = item.split('/').collect();
            let ok = (2..=3).contains(&parts.len())
                && parts.iter().all(|p| {
                    !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                });
            if !ok {
                return Err(format!(
                    "{item:?} is no platform; write OS/ARCH or OS/ARCH/VARIANT, e.g. linux/amd64,linux/arm64"
                ));
            }
            wanted.push(Wanted {
                os: parts[0].to_string(),
                arch: parts[1].to_string(),
                variant: parts.get(2).map(|v| v.to_string()),
            });
        }
        if wanted.is_empty() {
            return Err("no platform given; e.g. linux/amd64,linux/arm64".into());
        }
        Ok(PlatformSet(wanted))
    }
}

impl fmt::Display for PlatformSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .0
            .iter()
            .map(|w| match &w.variant {
                Some(v) => format!("{}/{}/{v}", w.os, w.arch),
                None => format!("{}/{}", w.os, w.arch),
            })
            .collect();
        f.write_str(&items.join(","))
    }
}

impl PlatformSet {
    /// Whether `platform` (`os/arch[/variant]`) is chosen; `linux/arm64` chooses every
    /// variant of it (`linux/arm64/v8`), as docker does.
    pub fn contains(&self, platform: &str) -> bool {
        let mut parts = platform.splitn(3, '/');
        let (os, arch, variant) = (parts.next(), parts.next(), parts.next());
        self.0.iter().any(|w| {
            Some(w.os.as_str()) == os
                && Some(w.arch.as_str()) == arch
                && w.variant
                    .as_ref()
                    .is_none_or(|v| Some(v.as_str()) == variant)
        })
    }
}

/// Whether a recorded index would be mirrored otherwise under `chosen` (pure): its
/// upstream platforms are the ones mirrored plus the ones dropped, and the choice of them
/// differs from what was mirrored. Single images and records without platforms are kept.
pub fn rechosen(
    media_type: &str,
    mirrored: &[String],
    dropped: &[String],
    chosen: Option<&PlatformSet>,
) -> bool {
    if !crate::oci::manifest::is_index(media_type) || mirrored.is_empty() {
        return false;
    }
    let upstream = mirrored.iter().chain(dropped);
    let wanted = upstream.filter(|p| chosen.is_none_or(|set| set.contains(p)));
    let mut wanted: Vec<&String> = wanted.collect();
    wanted.sort();
    wanted.dedup();
    let mut had: Vec<&String> = mirrored.iter().collect();
    had.sort();
    had != wanted
}

/// Whether a skip was decided by another `--platforms` choice than `chosen` (its reason
/// ends with the choice it was made under): then it is judged again.
pub fn skipped_by_other_choice(reason: &str, chosen: Option<&PlatformSet>) -> bool {
    reason
        .rsplit_once(SKIP_MARK)
        .is_some_and(|(_, was)| Some(was.to_string()) != chosen.map(|c| c.to_string()))
}

/// What a platform skip's reason ends with, before the choice it was made under.
pub const SKIP_MARK: &str = " in --platforms ";

/// What `--platforms` makes of an index.
#[derive(Debug, PartialEq, Eq)]
pub enum Subset {
    /// Every platform is chosen (or the index names none): copied verbatim.
    All,
    /// Some are: the rebuilt index (its other fields and the kept children's order and
    /// descriptors as they were), and the platforms left out.
    Rebuilt {
        /// The new index's bytes.
        bytes: Vec<u8>,
        /// Platforms dropped, sorted.
        dropped: Vec<String>,
    },
    /// None is: the platforms it has, sorted.
    Nothing(Vec<String>),
}

/// An object's members in the order written, each value's text untouched.
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Ordered;
        impl<'de> Visitor<'de> for Ordered {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    members.push(entry);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Ordered)
    }
}

#[derive(Deserialize)]
struct Child {
    digest: String,
    platform: Option<ChildPlatform>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ChildPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    variant: Option<String>,
}

/// buildx's attestation manifests: `unknown/unknown`, naming the child they attest.
const ATTESTS: &str = "vnd.docker.reference.digest";

impl Child {
    /// `os/arch[/variant]`, or `None` for a child without a real platform.
    fn platform(&self) -> Option<String> {
        let p = self.platform.as_ref()?;
        if p.os.is_empty() || p.architecture.is_empty() || p.os == "unknown" {
            return None;
        }
        Some(match p.variant.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        })
    }
}

/// The index `bytes` cut down to the chosen platforms (pure). Children without a real
/// platform stay, except attestations of a dropped child, which go with it.
pub fn subset_index(bytes: &[u8], chosen: &PlatformSet) -> Result<Subset, String> {
    let members: Members = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let Some((_, list)) = members.0.iter().find(|(k, _)| k == "manifests") else {
        return Ok(Subset::All);
    };
    let raw: Vec<Box<RawValue>> = serde_json::from_str(list.get()).map_err(|e| e.to_string())?;
    let children: Vec<Child> = raw
        .iter()
        .map(|r| serde_json::from_str(r.get()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut had: Vec<String> = children.iter().filter_map(Child::platform).collect();
    had.sort();
    had.dedup();
    let dropped_digests: Vec<&str> = children
        .iter()
        .filter(|c| c.platform().is_some_and(|p| !chosen.contains(&p)))
        .map(|c| c.digest.as_str())
        .collect();
    let keep = |c: &Child| match c.platform() {
        Some(p) => chosen.contains(&p),
        None => c
            .annotations
            .get(ATTESTS)
            .is_none_or(|d| !dropped_digests.contains(&d.as_str())),
    };
    let kept: Vec<bool> = children.iter().map(keep).collect();
    if had.is_empty() || kept.iter().all(|k| *k) {
        return Ok(Subset::All);
    }
    if !children
        .iter()
        .zip(&kept)
        .any(|(c, k)| *k && c.platform().is_some())
    {
        return Ok(Subset::Nothing(had));
    }
    let mut dropped: Vec<String> = children
        .iter()
        .filter_map(Child::platform)
        .filter(|p| !chosen.contains(p))
        .collect();
    dropped.sort();
    dropped.dedup();
    let kept_raw: Vec<&RawValue> = raw
        .iter()
        .zip(&kept)
        .filter(|(_, k)| **k)
        .map(|(r, _)| r.as_ref())
        .collect();
    let mut out = String::from("{");
    for (i, (key, value)) in members.0.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(key).expect("strings serialize"));
        out.push(':');
        if key == "manifests" {
            out.push_str(&serde_json::to_string(&kept_raw).expect("raw values serialize"));
        } else {
            out.push_str(value.get());
        }
    }
    out.push('}');
    Ok(Subset::Rebuilt {
        bytes: out.into_bytes(),
        dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn index() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
 {{"mediaType":"m","digest":"{a}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}},
 {{"mediaType":"m","digest":"{b}","size":2,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},
 {{"mediaType":"m","digest":"{c}","size":3,"platform":{{"architecture":"s390x","os":"linux"}}}},
 {{"mediaType":"m","digest":"{d}","size":4,"platform":{{"architecture":"unknown","os":"unknown"}},"annotations":{{"{ATTESTS}":"{c}"}}}},
 {{"mediaType":"m","digest":"{e}","size":5,"platform":{{"architecture":"unknown","os":"unknown"}},"annotations":{{"{ATTESTS}":"{a}"}}}}],
 "annotations":{{"org.opencontainers.image.source":"https://example.com"}}}}"#,
            a = digest('a'),
            b = digest('b'),
            c = digest('c'),
            d = digest('d'),
            e = digest('e'),
        )
    }

    #[test]
    fn a_changed_choice_is_seen_from_the_record() {
        let index = "application/vnd.oci.image.index.v1+json";
        let v = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let amd_arm: PlatformSet = "linux/amd64,linux/arm64".parse().unwrap();
        let amd: PlatformSet = "linux/amd64".parse().unwrap();
        let (both, arm) = (v(&["linux/amd64", "linux/arm64"]), v(&["linux/arm64"]));
        // Mirrored whole, no choice: as it was; a choice that cuts it: again.
        assert!(!rechosen(index, &both, &[], None));
        assert!(!rechosen(index, &both, &[], Some(&amd_arm)));
        assert!(rechosen(index, &both, &[], Some(&amd)));
        // Mirrored as amd64 only: widened or dropped choices bring arm64 back.
        let amd_only = v(&["linux/amd64"]);
        assert!(!rechosen(index, &amd_only, &arm, Some(&amd)));
        assert!(rechosen(index, &amd_only, &arm, Some(&amd_arm)));
        assert!(rechosen(index, &amd_only, &arm, None));
        // Single images and records without platforms are left alone.
        assert!(!rechosen(
            "application/vnd.oci.image.manifest.v1+json",
            &amd_only,
            &[],
            Some(&amd)
        ));
        assert!(!rechosen(index, &[], &[], Some(&amd)));
        let reason = format!("its platform linux/s390x is not{SKIP_MARK}{amd}");
        assert!(!skipped_by_other_choice(&reason, Some(&amd)));
        assert!(skipped_by_other_choice(&reason, Some(&amd_arm)));
        assert!(skipped_by_other_choice(&reason, None));
        assert!(!skipped_by_other_choice("schema 1 manifest", Some(&amd)));
    }

    #[test]
    fn platform_lists_parse_and_match_as_docker_does() {
        let set: PlatformSet = "linux/amd64, linux/arm64".parse().unwrap();
        assert_eq!(set.to_string(), "linux/amd64,linux/arm64");
        assert!(set.contains("linux/amd64") && set.contains("linux/arm64/v8"));
        assert!(!set.contains("linux/arm/v7") && !set.contains("windows/amd64"));
        let exact: PlatformSet = "linux/arm/v7".parse().unwrap();
        assert!(exact.contains("linux/arm/v7") && !exact.contains("linux/arm/v6"));
        for bad in ["", "linux", "linux/", "linux/amd64/v1/x", "linux amd64"] {
            let error = bad.parse::<PlatformSet>().unwrap_err();
            assert!(error.contains("linux/amd64"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_subset_keeps_order_annotations_and_descriptors_and_drops_attestations_with_their_child() {
        let set: PlatformSet = "linux/arm64,linux/amd64".parse().unwrap();
        let Subset::Rebuilt { bytes, dropped } = subset_index(index().as_bytes(), &set).unwrap()
        else {
            panic!("not rebuilt")
        };
        assert_eq!(dropped, ["linux/s390x"]);
        let text = String::from_utf8(bytes).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let digests: Vec<&str> = value["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap())
            .collect();
        // Source order, s390x and its attestation gone, amd64's attestation kept.
        assert_eq!(digests, [digest('a'), digest('b'), digest('e')]);
        assert_eq!(
            value["annotations"]["org.opencontainers.image.source"],
            "https://example.com"
        );
        // Members keep their order; a kept child's descriptor keeps its very text.
        assert!(
            text.starts_with(r#"{"schemaVersion":2,"mediaType":"#),
            "{text}"
        );
        assert!(
            text.contains(r#""platform":{"architecture":"arm64","os":"linux","variant":"v8"}"#)
        );
    }

    #[test]
    fn all_chosen_is_verbatim_and_none_chosen_says_what_there_is() {
        let all: PlatformSet = "linux/amd64,linux/arm64,linux/s390x".parse().unwrap();
        assert_eq!(subset_index(index().as_bytes(), &all).unwrap(), Subset::All);
        let none: PlatformSet = "windows/amd64".parse().unwrap();
        assert_eq!(
            subset_index(index().as_bytes(), &none).unwrap(),
            Subset::Nothing(vec![
                "linux/amd64".into(),
                "linux/arm64/v8".into(),
                "linux/s390x".into()
            ])
        );
        // An index of artifacts (no platforms) is not judged by platform.
        let artifacts = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"digest":"{}","size":1,"mediaType":"m"}}]}}"#,
            digest('a')
        );
        assert_eq!(
            subset_index(artifacts.as_bytes(), &none).unwrap(),
            Subset::All
        );
        assert!(subset_index(b"[1]", &none).is_err());
    }
}

//! `--images-from FILE`: the images a sync mirrors, as `serve --record-misses` wrote them
//! (JSON lines with an `image` field) or as plain `REGISTRY/REPO:TAG` lines.

use std::collections::BTreeSet;

use crate::reference::{Namespace, RepoPath, Tag};

/// The images and tags listed, relative to the sources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImagesFrom {
    /// (image relative to its source, tag).
    pub pairs: BTreeSet<(RepoPath, Tag)>,
}

impl ImagesFrom {
    /// The images, for `--images`.
    pub fn images(&self) -> Vec<RepoPath> {
        let set: BTreeSet<&RepoPath> = self.pairs.iter().map(|(i, _)| i).collect();
        set.into_iter().cloned().collect()
    }

    /// A regex matching exactly the tags listed (any image), for `--include-tags`.
    pub fn tags_regex(&self) -> String {
        let tags: BTreeSet<String> = self
            .pairs
            .iter()
            .map(|(_, t)| regex::escape(t.as_str()))
            .collect();
        format!("^({})$", tags.into_iter().collect::<Vec<_>>().join("|"))
    }

    /// Whether `image:tag` was listed.
    pub fn contains(&self, image: &RepoPath, tag: &Tag) -> bool {
        self.pairs.contains(&(image.clone(), tag.clone()))
    }
}

/// `REGISTRY/REPO:TAG` of one line (a JSON object's `image`, or the line itself).
fn reference(line: &str) -> Option<String> {
    let line = line.trim();
    if line.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        return value["image"].as_str().map(str::to_string);
    }
    Some(line.to_string())
}

/// Parses the file's `text`, keeping the images under one of `sources`; the error says
/// which line is wrong, or that none lies under a source.
pub fn parse(text: &str, sources: &[Namespace]) -> Result<ImagesFrom, String> {
    let mut found = ImagesFrom::default();
    let mut lines = 0;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        lines += 1;
        let wrong = || {
            format!(
                "line {}: not a REGISTRY/REPO:TAG image or a --record-misses line",
                n + 1
            )
        };
        let image = reference(line).ok_or_else(wrong)?;
        let (name, tag) = image.rsplit_once(':').ok_or_else(wrong)?;
        let tag: Tag = tag.parse().map_err(|_| wrong())?;
        let (registry, repo) = name.split_once('/').ok_or_else(wrong)?;
        let repo: RepoPath = repo.parse().map_err(|_| wrong())?;
        let under = sources.iter().find_map(|ns| {
            (ns.registry.as_str() == registry)
                .then(|| repo.strip_prefix(ns.path.as_ref()))
                .flatten()
        });
        if let Some(image) = under {
            found.pairs.insert((image, tag));
        }
    }
    if found.pairs.is_empty() && lines > 0 {
        return Err(format!(
            "none of its {lines} images lies under a --source; give the namespace they were pulled from"
        ));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_misses_lines_and_plain_lines_are_read() {
        let sources = vec!["gcr.io/google_containers".parse().unwrap()];
        let text = r#"{"image":"gcr.io/google_containers/etcd-amd64:3.0.14-kubeadm","digest":"sha256:x"}
gcr.io/google_containers/pause:3.1
# a comment
quay.io/other/x:1
"#;
        let found = parse(text, &sources).unwrap();
        let images: Vec<String> = found.images().iter().map(|i| i.to_string()).collect();
        assert_eq!(images, ["etcd-amd64", "pause"]);
        assert!(found.contains(&"pause".parse().unwrap(), &"3.1".parse().unwrap()));
        assert!(!found.contains(
            &"pause".parse().unwrap(),
            &"3.0.14-kubeadm".parse().unwrap()
        ));
        let re = regex::Regex::new(&found.tags_regex()).unwrap();
        assert!(re.is_match("3.1") && !re.is_match("3x1") && !re.is_match("3.10"));
        assert!(
            parse("quay.io/other/x:1\n", &sources)
                .unwrap_err()
                .contains("--source")
        );
        assert!(
            parse("nonsense\n", &sources)
                .unwrap_err()
                .contains("line 1")
        );
    }
}

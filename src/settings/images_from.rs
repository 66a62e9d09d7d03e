//! `--images-from FILE`: the images a sync mirrors, as `serve --record-misses` wrote them
//! (JSON lines with an `image` field) or as plain `REGISTRY/REPO:TAG` lines.

use std::collections::BTreeSet;

use crate::reference::{Namespace, RepoPath, Tag};

/// The images and tags listed, each under the source namespace it lies under: with
/// several sources, each lists only its own lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImagesFrom {
    /// (source namespace, image relative to it, tag).
    pub pairs: BTreeSet<(Namespace, RepoPath, Tag)>,
}

impl ImagesFrom {
    /// The images listed under `ns`, for `--images`.
    pub fn images(&self, ns: &Namespace) -> Vec<RepoPath> {
        let set: BTreeSet<&RepoPath> = self.under(ns).map(|(i, _)| i).collect();
        set.into_iter().cloned().collect()
    }

    /// A regex matching exactly the tags listed under `ns` (any image), for `--include-tags`.
    pub fn tags_regex(&self, ns: &Namespace) -> String {
        let tags: BTreeSet<String> = self
            .under(ns)
            .map(|(_, t)| regex::escape(t.as_str()))
            .collect();
        format!("^({})$", tags.into_iter().collect::<Vec<_>>().join("|"))
    }

    /// Whether `image:tag` was listed under `ns`.
    pub fn contains(&self, ns: &Namespace, image: &RepoPath, tag: &Tag) -> bool {
        self.pairs
            .contains(&(ns.clone(), image.clone(), tag.clone()))
    }

    fn under<'a>(&'a self, ns: &'a Namespace) -> impl Iterator<Item = (&'a RepoPath, &'a Tag)> {
        self.pairs
            .iter()
            .filter(move |(n, _, _)| n == ns)
            .map(|(_, i, t)| (i, t))
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
/// which line is wrong, or that none lies under a source (checked run-wide: one source of
/// several may have no line, and then mirrors nothing).
pub fn parse(text: &str, sources: &[Namespace]) -> Result<ImagesFrom, String> {
    let (found, lines) = read(text, sources)?;
    if found.pairs.is_empty() && lines > 0 {
        return Err(format!(
            "none of its {lines} images lies under a --source; give the namespace they were pulled from"
        ));
    }
    Ok(found)
}

/// Parses the file's `text` for one source of several: no line under it is no error.
pub fn parse_for(text: &str, source: &Namespace) -> Result<ImagesFrom, String> {
    read(text, std::slice::from_ref(source)).map(|(found, _)| found)
}

/// The pairs under `sources`, and how many image lines the file has.
fn read(text: &str, sources: &[Namespace]) -> Result<(ImagesFrom, usize), String> {
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
        // The deepest namespace wins, so `gcr.io/a/b` keeps its lines when `gcr.io/a` is a
        // source too.
        let under = sources
            .iter()
            .filter(|ns| ns.registry.as_str() == registry)
            .filter_map(|ns| Some((ns, repo.strip_prefix(ns.path.as_ref())?)))
            .max_by_key(|(ns, _)| ns.path.as_ref().map_or(0, |p| p.as_str().len()));
        if let Some((ns, image)) = under {
            found.pairs.insert((ns.clone(), image, tag));
        }
    }
    Ok((found, lines))
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
        let ns = &sources[0];
        let images: Vec<String> = found.images(ns).iter().map(|i| i.to_string()).collect();
        assert_eq!(images, ["etcd-amd64", "pause"]);
        assert!(found.contains(ns, &"pause".parse().unwrap(), &"3.1".parse().unwrap()));
        assert!(!found.contains(
            ns,
            &"pause".parse().unwrap(),
            &"3.0.14-kubeadm".parse().unwrap()
        ));
        let re = regex::Regex::new(&found.tags_regex(ns)).unwrap();
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

    #[test]
    fn each_source_keeps_only_the_lines_under_it() {
        let sources: Vec<Namespace> = ["gcr.io/a", "gcr.io/a/b", "quay.io/c"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let text = "gcr.io/a/x:1\ngcr.io/a/b/y:2\nquay.io/c/z:3\n";
        let found = parse(text, &sources).unwrap();
        let names = |ns: &Namespace| -> Vec<String> {
            found.images(ns).iter().map(|i| i.to_string()).collect()
        };
        assert_eq!(names(&sources[0]), ["x"]);
        assert_eq!(names(&sources[1]), ["y"]);
        assert_eq!(names(&sources[2]), ["z"]);
        let tag = |t: &str| t.parse::<Tag>().unwrap();
        assert!(found.contains(&sources[2], &"z".parse().unwrap(), &tag("3")));
        assert!(!found.contains(&sources[0], &"z".parse().unwrap(), &tag("3")));
        assert!(
            !regex::Regex::new(&found.tags_regex(&sources[0]))
                .unwrap()
                .is_match("2")
        );
    }
}

//! Git objects as GitHub stores them, for the fake GitHub: blobs, trees and commits whose
//! ids are real git SHA-1s (checked against `git hash-object` in tests/github.rs).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use sha1::{Digest as _, Sha1};

#[derive(Debug, Clone)]
pub enum Object {
    Blob(Vec<u8>),
    /// name → (mode, sha)
    Tree(BTreeMap<String, (String, String)>),
    Commit {
        tree: String,
        parents: Vec<String>,
    },
}

fn hash(kind: &str, content: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(format!("{kind} {}\0", content.len()).as_bytes());
    hasher.update(content);
    hex::encode(hasher.finalize())
}

/// The object database: sha → (object, raw git content).
#[derive(Default)]
pub struct Git {
    pub objects: HashMap<String, (Object, Vec<u8>)>,
}

impl Git {
    pub fn store(&mut self, object: Object) -> String {
        let (kind, raw) = match &object {
            Object::Blob(bytes) => ("blob", bytes.clone()),
            Object::Tree(entries) => {
                // git orders tree entries by name, with a tree's name compared as "name/".
                let mut sorted: Vec<_> = entries.iter().collect();
                sorted.sort_by_key(|(name, (mode, _))| {
                    if mode == "40000" {
                        format!("{name}/")
                    } else {
                        name.to_string()
                    }
                });
                let mut raw = Vec::new();
                for (name, (mode, sha)) in sorted {
                    raw.extend_from_slice(format!("{mode} {name}\0").as_bytes());
                    raw.extend_from_slice(&hex::decode(sha).unwrap());
                }
                ("tree", raw)
            }
            Object::Commit { .. } => unreachable!("commits are stored by commit()"),
        };
        let sha = hash(kind, &raw);
        self.objects.insert(sha.clone(), (object, raw));
        sha
    }

    pub fn commit(
        &mut self,
        tree: &str,
        parents: &[String],
        message: &str,
        author: &Value,
    ) -> String {
        let name = author["name"].as_str().unwrap_or("gcrsync");
        let email = author["email"].as_str().unwrap_or("gcrsync@example.com");
        let when = author["date"]
            .as_str()
            .and_then(|d| d.parse::<jiff::Timestamp>().ok())
            .unwrap_or_else(jiff::Timestamp::now);
        let signature = format!("{name} <{email}> {} +0000", when.as_second());
        let mut raw = format!("tree {tree}\n");
        for parent in parents {
            raw.push_str(&format!("parent {parent}\n"));
        }
        raw.push_str(&format!(
            "author {signature}\ncommitter {signature}\n\n{message}"
        ));
        if !raw.ends_with('\n') {
            raw.push('\n');
        }
        let sha = hash("commit", raw.as_bytes());
        let object = Object::Commit {
            tree: tree.to_string(),
            parents: parents.to_vec(),
        };
        self.objects.insert(sha.clone(), (object, raw.into_bytes()));
        sha
    }

    /// Every file of a tree, by full path.
    pub fn files(&self, tree: &str, prefix: &str, out: &mut BTreeMap<String, String>) {
        let Some((Object::Tree(entries), _)) = self.objects.get(tree) else {
            return;
        };
        for (name, (mode, sha)) in entries {
            let path = format!("{prefix}{name}");
            if mode == "40000" {
                self.files(sha, &format!("{path}/"), out)
            } else {
                out.insert(path, sha.clone());
            }
        }
    }

    /// Builds the nested trees of a set of files; returns the root tree's sha.
    pub fn build(&mut self, files: &BTreeMap<String, String>) -> String {
        let mut here: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut dirs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (path, sha) in files {
            match path.split_once('/') {
                Some((dir, rest)) => {
                    dirs.entry(dir.to_string())
                        .or_default()
                        .insert(rest.to_string(), sha.clone());
                }
                None => {
                    here.insert(path.clone(), ("100644".into(), sha.clone()));
                }
            }
        }
        for (dir, sub) in dirs {
            let sha = self.build(&sub);
            here.insert(dir, ("40000".into(), sha));
        }
        self.store(Object::Tree(here))
    }

    pub fn commit_tree(&self, commit: &str) -> Option<String> {
        match self.objects.get(commit) {
            Some((Object::Commit { tree, .. }, _)) => Some(tree.clone()),
            _ => None,
        }
    }

    pub fn is_ancestor(&self, ancestor: &str, of: &str) -> bool {
        let mut stack = vec![of.to_string()];
        while let Some(sha) = stack.pop() {
            if sha == ancestor {
                return true;
            }
            if let Some((Object::Commit { parents, .. }, _)) = self.objects.get(&sha) {
                stack.extend(parents.iter().cloned());
            }
        }
        false
    }

    /// Every file at `commit`: path → blob sha.
    pub fn tree_files(&self, commit: &str) -> BTreeMap<String, String> {
        let mut files = BTreeMap::new();
        if let Some(tree) = self.commit_tree(commit) {
            self.files(&tree, "", &mut files);
        }
        files
    }

    pub fn blob(&self, sha: &str) -> Option<Vec<u8>> {
        match self.objects.get(sha) {
            Some((Object::Blob(bytes), _)) => Some(bytes.clone()),
            _ => None,
        }
    }

    pub fn read(&self, commit: &str, path: &str) -> Option<Vec<u8>> {
        self.blob(self.tree_files(commit).get(path)?)
    }
}

//! Name mapping: which target repository each source image goes to (pure).

use std::collections::BTreeMap;

use minijinja::Environment;

use crate::reference::{Namespace, RepoPath, Repository};

/// Why a name could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// The template does not parse or render.
    #[error("--name-template: {0}")]
    Template(#[from] minijinja::Error),
    /// The rendered name is not a valid repository path.
    #[error(
        "--name-template maps {source_image} to {rendered:?}, which is not a valid repository path: {reason}"
    )]
    InvalidName {
        /// The full source image.
        source_image: String,
        /// What the template produced.
        rendered: String,
        /// The grammar violated.
        reason: String,
    },
}

/// Maps `(source namespace, image)` to a target repository with `--name-template`.
pub struct NameMapper {
    env: Environment<'static>,
    flatten_separator: String,
}

const TEMPLATE: &str = "name";

impl NameMapper {
    /// Compiles the template once; a syntax error is a configuration error.
    pub fn new(template: &str, flatten_separator: &str) -> Result<Self, MappingError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.add_template_owned(TEMPLATE, template.to_string())?;
        Ok(NameMapper {
            env,
            flatten_separator: flatten_separator.to_string(),
        })
    }

    /// The target repository of `image` from `source` under `target`.
    pub fn map(
        &self,
        source: &Namespace,
        image: &RepoPath,
        target: &Namespace,
    ) -> Result<Repository, MappingError> {
        let namespace = source.path.as_ref().map_or("", |p| p.as_str());
        let rendered = self
            .env
            .get_template(TEMPLATE)?
            .render(minijinja::context! {
                registry => source.registry.as_str(),
                namespace => namespace,
                image => image.as_str(),
            })?;
        let rendered = rendered.trim().to_string();
        // Docker Hub allows one level under the user: nested names are flattened.
        let name = if target.registry.is_docker_hub() && target.path.is_some() {
            rendered.replace('/', &self.flatten_separator)
        } else {
            rendered.clone()
        };
        let invalid = |reason: String| MappingError::InvalidName {
            source_image: format!("{source}/{image}"),
            rendered: rendered.clone(),
            reason,
        };
        let relative: RepoPath = name
            .parse()
            .map_err(|e: crate::reference::ParseError| invalid(e.to_string()))?;
        let path = target.repo(&relative);
        if target.registry.is_docker_hub() && path.depth() != 2 {
            return Err(invalid(
                "Docker Hub repositories are exactly USER/NAME: give --target docker.io/USER"
                    .into(),
            ));
        }
        Ok(Repository {
            registry: target.registry.clone(),
            path,
        })
    }
}

/// Every group of source images that map to one target repository (SPEC §3: a config error).
pub fn collisions(mapped: &[(String, Repository)]) -> Vec<(Repository, Vec<String>)> {
    let mut by_target: BTreeMap<&Repository, Vec<String>> = BTreeMap::new();
    for (source, target) in mapped {
        by_target.entry(target).or_default().push(source.clone());
    }
    by_target
        .into_iter()
        .filter(|(_, sources)| sources.len() > 1)
        .map(|(target, mut sources)| {
            sources.sort();
            sources.dedup();
            (target.clone(), sources)
        })
        .filter(|(_, sources)| sources.len() > 1)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(
        template: &str,
        source: &str,
        image: &str,
        target: &str,
    ) -> Result<String, MappingError> {
        let mapper = NameMapper::new(template, "_")?;
        Ok(mapper
            .map(
                &source.parse().unwrap(),
                &image.parse().unwrap(),
                &target.parse().unwrap(),
            )?
            .to_string())
    }

    #[test]
    fn default_template_keeps_the_image_path() {
        assert_eq!(
            map("{{ image }}", "gcr.io/gc", "pause", "localhost:5000/m").unwrap(),
            "localhost:5000/m/pause"
        );
        assert_eq!(
            map("{{ image }}", "gcr.io/gc", "a/b", "localhost:5000/m").unwrap(),
            "localhost:5000/m/a/b"
        );
    }

    #[test]
    fn docker_hub_targets_are_flattened() {
        assert_eq!(
            map("{{ image }}", "gcr.io/gc", "a/b", "docker.io/u").unwrap(),
            "docker.io/u/a_b"
        );
        let named = map(
            "{{ registry }}/{{ namespace }}/{{ image }}",
            "gcr.io/gc",
            "p",
            "u",
        )
        .unwrap();
        assert_eq!(named, "docker.io/u/gcr.io_gc_p");
    }

    #[test]
    fn bad_names_and_templates_are_errors() {
        assert!(matches!(
            map("{{ image }}!", "gcr.io/gc", "p", "t.io/m"),
            Err(MappingError::InvalidName { .. })
        ));
        assert!(matches!(
            map("{{ imag }}", "gcr.io/gc", "p", "t.io/m"),
            Err(MappingError::Template(_))
        ));
        assert!(matches!(
            map("{{ image }}", "gcr.io/gc", "p", "docker.io"),
            Err(MappingError::InvalidName { .. })
        ));
    }

    #[test]
    fn collisions_list_every_source_of_one_target() {
        let target = |p: &str| Repository {
            registry: "t.io".parse().unwrap(),
            path: p.parse().unwrap(),
        };
        let found = collisions(&[
            ("a/x".into(), target("m/x")),
            ("b/x".into(), target("m/x")),
            ("a/y".into(), target("m/y")),
        ]);
        assert_eq!(
            found,
            vec![(target("m/x"), vec!["a/x".to_string(), "b/x".to_string()])]
        );
    }
}

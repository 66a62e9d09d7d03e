//! Resolving options: values, fallbacks, and the messages of bad ones.

use std::time::Duration;

use clap::Parser;

use super::*;
use crate::cli::Cli;

fn resolve_args(args: &[&str]) -> Result<Settings, ConfigError> {
    let mut argv = vec!["gcrsync"];
    argv.extend_from_slice(args);
    resolve(Cli::try_parse_from(argv).unwrap(), |_| None)
}

#[test]
fn runner_debug_turns_on_debug_logs() {
    let cli = |args: &[&str]| {
        Cli::try_parse_from([&["gcrsync", "--source", "s.io/n"], args].concat()).unwrap()
    };
    let debug = |name: &str| (name == "RUNNER_DEBUG").then(|| "1".to_string());
    let level = |args: &[&str], env: &dyn Fn(&str) -> Option<String>| {
        resolve(cli(args), env).unwrap().verbosity
    };
    assert_eq!(level(&["--target", "t"], &|_| None), 0);
    assert_eq!(level(&["--target", "t"], &debug), 1);
    assert_eq!(level(&["--target", "t", "-q"], &debug), 1);
    assert_eq!(level(&["--target", "t", "-vv"], &debug), 2);
    assert_eq!(level(&["--target", "t", "-q"], &|_| None), -1);
}

#[test]
fn durations() {
    assert_eq!(parse_duration("45m"), Some(Duration::from_secs(2700)));
    assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("soon"), None);
}

#[test]
fn seed_namespace_and_sources_merge() {
    let s = resolve_args(&[
        "--namespace",
        "google-containers",
        "--source",
        "quay.io/x,quay.io/x",
        "--target",
        "u",
    ])
    .unwrap();
    let names: Vec<String> = s.sources.iter().map(|s| s.namespace.to_string()).collect();
    assert_eq!(names, ["quay.io/x", "gcr.io/google-containers"]);
    assert_eq!(s.budget, Some(100));
}

#[test]
fn schemes_and_loopback_choose_the_transport() {
    let s = resolve_args(&[
        "--source",
        "http://reg.example:5000/a,localhost:5000/b,https://127.0.0.1:5001/c",
        "--target",
        "https://[::1]:5002/m",
        "--insecure-registry",
        "https://self.example",
    ])
    .unwrap();
    let t = |h: &str| s.transport(&h.parse().unwrap());
    assert_eq!(t("reg.example:5000"), Transport::Http);
    assert_eq!(t("localhost:5000"), Transport::Http);
    assert_eq!(t("127.0.0.1:5001"), Transport::Https);
    assert_eq!(t("[::1]:5002"), Transport::Https);
    assert_eq!(t("127.0.0.1:5003"), Transport::Http);
    assert_eq!(t("gcr.io"), Transport::Https);
    assert_eq!(t("self.example"), Transport::HttpsUnverified);
    for (args, says) in [
        (
            ["--source", "http://r.io/a", "--target", "https://r.io/b"],
            "both as http://r.io and https://r.io",
        ),
        (
            ["--source", "https://r.io/a", "--insecure-registry", "r.io"],
            "contradicts --insecure-registry r.io",
        ),
    ] {
        let mut args = args.to_vec();
        if !args.contains(&"--target") {
            args.extend(["--target", "u"]);
        }
        let err = resolve_args(&args)
            .err()
            .expect("a clash is refused")
            .to_string();
        assert!(err.contains(says), "{err}");
    }
}

#[test]
fn bad_values_name_the_flag_and_variable() {
    let cases: &[(&[&str], &str)] = &[
        (&["--target", "u"], "--source (GCRSYNC_SOURCE)"),
        (&["--source", "gcr.io/x"], "--target (GCRSYNC_TARGET)"),
        (&["--source", "gcr.io/X", "--target", "u"], "--source"),
        (
            &[
                "--source",
                "gcr.io/x",
                "--target",
                "u",
                "--process-limit",
                "0",
            ],
            "--process-limit (GCRSYNC_PROCESS_LIMIT)",
        ),
        (
            &[
                "--source",
                "gcr.io/x",
                "--target",
                "u",
                "--process-count",
                "-5",
            ],
            "--process-count",
        ),
        (
            &[
                "--source",
                "gcr.io/x",
                "--target",
                "u",
                "--include-tags",
                "(",
            ],
            "--include-tags",
        ),
        (
            &[
                "--source",
                "gcr.io/x",
                "--target",
                "u",
                "--deadline",
                "soon",
            ],
            "--deadline",
        ),
        (
            &["--source", "gcr.io/x", "--target", "u", "--shard", "3/2"],
            "--shard",
        ),
        (
            &[
                "--source",
                "gcr.io/x",
                "--target",
                "u",
                "--timezone",
                "Mars/Base",
            ],
            "--timezone",
        ),
        (
            &[
                "--source",
                "gcr.io/x",
                "--target",
                "u",
                "--filter-preset",
                "new",
            ],
            "--filter-preset",
        ),
        (
            &[
                "--source",
                "gcr.io/x",
                "--target",
                "u",
                "--source-username",
                "a",
            ],
            "--source-username",
        ),
        (
            &["--source", "gcr.io/x", "--target", "gcr.io/x"],
            "--target",
        ),
    ];
    for (args, expected) in cases {
        let err = resolve_args(args)
            .err()
            .unwrap_or_else(|| panic!("{args:?} accepted"));
        assert!(err.to_string().starts_with(expected), "{args:?}: {err}");
    }
}

#[test]
fn a_proxy_password_is_masked_as_written_and_as_encoded() {
    let settings = resolve_args(&[
        "--source",
        "s.io/n",
        "--target",
        "t.io/m",
        "--proxy",
        "http://me:p%40ss+w@proxy:3128",
    ])
    .unwrap();
    let secrets = settings.secrets();
    assert!(secrets.contains(&"p%40ss+w".to_string()), "{secrets:?}");
    assert!(secrets.contains(&"p@ss+w".to_string()), "{secrets:?}");
}

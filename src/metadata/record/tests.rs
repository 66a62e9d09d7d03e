//! Unit tests of the record schema: how outcomes apply, legacy lists, the JSON layout.

use super::*;

fn synced(tag: &str, digest: char, at: &str) -> Outcome {
    Outcome::Synced {
        image: "pause".into(),
        tag: tag.into(),
        target: "t/pause".into(),
        record: TagRecord {
            deleted_upstream_at: None,
            pruned_at: None,
            digest: Some(
                format!("sha256:{}", digest.to_string().repeat(64))
                    .parse()
                    .unwrap(),
            ),
            source_digest: None,
            media_type: "m".into(),
            platforms: vec![],
            referrers: Vec::new(),
            referrer_tags: None,
            dropped_platforms: vec![],
            synced_at: at.into(),
        },
        previous: None,
        copied: true,
    }
}

#[test]
fn later_sync_wins_and_success_clears_failure() {
    let mut record = NamespaceRecord::new("s".into(), "t".into());
    record.apply(&[Outcome::Failed {
        image: "pause".into(),
        tag: "1".into(),
        error: "x".into(),
        at: "T1".into(),
    }]);
    record.apply(&[Outcome::Failed {
        image: "pause".into(),
        tag: "1".into(),
        error: "y".into(),
        at: "T2".into(),
    }]);
    assert_eq!(record.failed["pause:1"].attempts, 2);
    record.apply(&[synced("1", 'b', "2026-01-02T00:00:00Z")]);
    assert!(record.failed.is_empty());
    record.apply(&[synced("1", 'a', "2026-01-01T00:00:00Z")]);
    assert!(
        record
            .digest("pause", "1")
            .unwrap()
            .unwrap()
            .as_str()
            .ends_with('b')
    );
}

fn skipped(tag: &str, digest: char, at: &str) -> Outcome {
    Outcome::Skipped {
        image: "pause".into(),
        tag: tag.into(),
        digest: format!("sha256:{}", digest.to_string().repeat(64))
            .parse()
            .unwrap(),
        reason: "schema 1 manifest".into(),
        at: at.into(),
    }
}

#[test]
fn skips_replace_failures_keep_their_since_and_a_sync_clears_them() {
    let mut record = NamespaceRecord::new("s".into(), "t".into());
    record.apply(&[Outcome::Failed {
        image: "pause".into(),
        tag: "0.8".into(),
        error: "digest mismatch".into(),
        at: "T0".into(),
    }]);
    record.apply(&[skipped("0.8", 'a', "T1")]);
    assert!(record.failed.is_empty());
    record.apply(&[skipped("0.8", 'a', "T2")]);
    assert_eq!(record.skipped["pause:0.8"].since, "T1");
    let a = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
    let b = format!("sha256:{}", "b".repeat(64)).parse().unwrap();
    assert!(record.skipped_at("pause", "0.8", &a));
    assert!(!record.skipped_at("pause", "0.8", &b));
    // Moved to another uncopyable digest: a new verdict, a new since.
    record.apply(&[skipped("0.8", 'b', "T3")]);
    assert_eq!(record.skipped["pause:0.8"].since, "T3");
    record.apply(&[synced("0.8", 'c', "2026-01-01T00:00:00Z")]);
    assert!(record.skipped.is_empty());
    assert!(record.to_json().contains("\"skipped\": {}"));
}

#[test]
fn json_keys_are_sorted_with_trailing_newline() {
    let mut record = NamespaceRecord::new("s".into(), "t".into());
    record.apply(&[synced("1", 'a', "2026-01-01T00:00:00Z")]);
    let text = record.to_json();
    assert!(text.ends_with("}\n"));
    let keys: Vec<_> = text
        .lines()
        .filter(|l| l.starts_with("  \""))
        .map(|l| l.trim().to_string())
        .collect();
    assert!(
        keys[0].starts_with("\"failed\"")
            && keys[2].starts_with("\"skipped\"")
            && keys[4].starts_with("\"target\""),
        "{keys:?}"
    );
    assert_eq!(
        NamespaceRecord::from_json(text.as_bytes(), "", "").unwrap(),
        record
    );
}

#[test]
fn json_written_directly_has_every_key_sorted_as_a_json_tree_would() {
    let mut record = NamespaceRecord::new("s".into(), "t".into());
    let mut multi = synced("2", 'b', "2026-01-02T00:00:00Z");
    if let Outcome::Synced { record, .. } = &mut multi {
        record.platforms = vec!["linux/amd64".into(), "linux/arm64".into()];
    }
    record.apply(&[synced("1", 'a', "2026-01-01T00:00:00Z"), multi]);
    record.apply(&[skipped("0.8", 'c', "T1")]);
    record.apply(&[Outcome::Failed {
        image: "pause".into(),
        tag: "3".into(),
        error: "x".into(),
        at: "T2".into(),
    }]);
    // serde_json's Value map is ordered by key, so its round trip sorts every level;
    // a field declared out of order shows here.
    let value = serde_json::to_value(&record).unwrap();
    let sorted = serde_json::to_string_pretty(&value).unwrap() + "\n";
    assert_eq!(record.to_json(), sorted);
}

#[test]
fn legacy_lists_import_with_unknown_digests() {
    let record = NamespaceRecord::from_json(
        br#"["base:debug", "cc:latest"]"#,
        "gcr.io/distroless",
        "docker.io/u",
    )
    .unwrap();
    assert_eq!(record.digest("base", "debug"), Some(None));
    assert_eq!(record.images["cc"].target, "docker.io/u/cc");
}

#[test]
fn maps_are_read_whole_in_key_order_and_a_repeated_key_keeps_its_last_value() {
    let tag = |at: &str| format!(r#"{{"digest":null,"synced_at":"{at}"}}"#);
    let json = format!(
        r#"{{"images":{{"b":{{"tags":{{}},"target":"t/b"}},"a":{{"tags":{{"2":{},"1":{},"2":{}}},"target":"t/a"}}}},"source":"s","target":"t"}}"#,
        tag("first"),
        tag("one"),
        tag("last")
    );
    let record: NamespaceRecord = serde_json::from_str(&json).unwrap();
    assert_eq!(record.images.keys().collect::<Vec<_>>(), ["a", "b"]);
    let tags = &record.images["a"].tags;
    assert_eq!(tags.keys().collect::<Vec<_>>(), ["1", "2"]);
    assert_eq!(
        (tags["1"].synced_at.as_str(), tags["2"].synced_at.as_str()),
        ("one", "last")
    );
    // Filled at once, the map still takes the keys a batch adds later.
    let mut image = record.images["a"].clone();
    image.tags.insert("0".into(), TagRecord::default());
    assert_eq!(image.tags.len(), 3);
}

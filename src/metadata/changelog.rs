//! Bounds `CHANGELOG.md`: past `LIMIT` bytes its older blocks move into
//! `changelog/YYYY-MM.md` by the month of each block, in the same commit, so nothing is
//! lost and the file GitHub shows stays small. Pure: bytes in, bytes out.

use std::ops::Range;

/// `CHANGELOG.md` is rotated once a batch would make it larger than this: far below
/// GitHub's 512 KB rendering cut and the contents API's 1 MB inline answers, so reading it
/// each batch is one small request.
pub const LIMIT: usize = 256 * 1024;
/// What a rotation keeps: the newest blocks up to this many bytes (at least the newest
/// block), so that a rotation happens once per ~`LIMIT - KEEP` bytes of new blocks, not in
/// every batch once the file is full.
pub const KEEP: usize = LIMIT / 2;

/// Where the archive of `month` (`YYYY-MM`) lives, relative to `--metadata-path`.
pub fn archive_path(month: &str) -> String {
    format!("changelog/{month}.md")
}

/// How a block's first line begins: the text the template writes before the time (`### `
/// for the built-in one), then the time as `YYYY-MM-DD HH:MM:SS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockStart {
    /// The text before the time on the block's first line.
    pub prefix: String,
}

impl BlockStart {
    /// The month (`YYYY-MM`) of a block whose first line is `line`, or `None` when `line`
    /// starts no block.
    fn month<'a>(&self, line: &'a [u8]) -> Option<&'a str> {
        let rest = line.strip_prefix(self.prefix.as_bytes())?;
        let time = rest.get(..19)?;
        let shape = b"0000-00-00 00:00:00";
        let fits = time.iter().zip(shape).all(|(c, s)| {
            if *s == b'0' {
                c.is_ascii_digit()
            } else {
                c == s
            }
        });
        fits.then(|| std::str::from_utf8(&time[..7]).expect("ASCII digits"))
    }
}

/// What a rotation writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The bytes `CHANGELOG.md` keeps (a prefix of the text).
    pub keep: usize,
    /// Moved blocks by month, newest month first; each month's text newest block first,
    /// to be put ahead of what that month's archive already holds.
    pub moved: Vec<(String, Vec<u8>)>,
}

/// Splits `text` (the new CHANGELOG: the new block, `new_block` bytes, then the old file)
/// when it is over `limit`: the newest blocks up to `keep` bytes stay, the others move by
/// month. Old blocks are found by `start`; text before the first one found belongs to it,
/// and old text where none is found (a template without the time) is one block of
/// `this_month`. `None`: nothing to move.
pub fn rotate(
    text: &[u8],
    new_block: usize,
    start: Option<&BlockStart>,
    this_month: &str,
    limit: usize,
    keep: usize,
) -> Option<Rotation> {
    if text.len() <= limit || new_block >= text.len() {
        return None;
    }
    let blocks = blocks(text, new_block, start, this_month);
    let mut kept = 1;
    while kept < blocks.len() && blocks[kept].1.end <= keep {
        kept += 1;
    }
    let mut moved: Vec<(String, Vec<u8>)> = Vec::new();
    for (month, range) in &blocks[kept..] {
        match moved.iter_mut().find(|(m, _)| m == month) {
            Some((_, bytes)) => bytes.extend_from_slice(&text[range.clone()]),
            None => moved.push((month.clone(), text[range.clone()].to_vec())),
        }
    }
    Some(Rotation {
        keep: blocks[kept - 1].1.end,
        moved,
    })
}

/// The blocks of `text` with their months, newest first; the first is the new block.
fn blocks(
    text: &[u8],
    new_block: usize,
    start: Option<&BlockStart>,
    this_month: &str,
) -> Vec<(String, Range<usize>)> {
    let mut starts: Vec<(usize, &str)> = Vec::new();
    if let Some(start) = start {
        let mut offset = new_block;
        for line in text[new_block..].split_inclusive(|&b| b == b'\n') {
            if let Some(month) = start.month(line) {
                starts.push((offset, month));
            }
            offset += line.len();
        }
    }
    let mut blocks = vec![(this_month.to_string(), 0..new_block)];
    if starts.is_empty() {
        blocks.push((this_month.to_string(), new_block..text.len()));
        return blocks;
    }
    // Text before the first block found (written by hand or by another tool) goes with it.
    starts[0].0 = new_block;
    for (i, (at, month)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(text.len(), |next| next.0);
        blocks.push((month.to_string(), *at..end));
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(time: &str, lines: usize) -> String {
        let mut text = format!("### {time} Update(num: {lines}):\n\n");
        for i in 0..lines {
            text.push_str(&format!(
                "- gcr.io/ns/app:{i} → docker.io/u/app:{i} (sha256:…)\n"
            ));
        }
        text.push('\n');
        text
    }

    fn start() -> BlockStart {
        BlockStart {
            prefix: "### ".into(),
        }
    }

    #[test]
    fn a_small_changelog_is_left_alone() {
        let text = block("2026-11-22 10:00:00", 3) + &block("2026-11-01 10:00:00", 3);
        let new = block("2026-11-22 10:00:00", 3).len();
        assert_eq!(
            rotate(
                text.as_bytes(),
                new,
                Some(&start()),
                "2026-11",
                10_000,
                5_000
            ),
            None
        );
    }

    #[test]
    fn older_blocks_move_by_month_newest_first_and_nothing_is_lost() {
        let new = block("2026-12-01 09:00:00", 2);
        let old = [
            block("2026-11-30 10:00:00", 4),
            block("2026-11-02 10:00:00", 4),
            block("2026-10-31 23:59:59", 4),
            block("2026-10-01 00:00:00", 4),
        ];
        let text = new.clone() + &old.concat();
        let limit = new.len() + old[0].len() + 10;
        let keep = new.len() + old[0].len();
        let r = rotate(
            text.as_bytes(),
            new.len(),
            Some(&start()),
            "2026-12",
            limit,
            keep,
        )
        .expect("over the limit");
        assert_eq!(r.keep, keep, "the new block and the newest old one stay");
        let months: Vec<&str> = r.moved.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(months, ["2026-11", "2026-10"]);
        assert_eq!(r.moved[0].1, old[1].as_bytes());
        assert_eq!(r.moved[1].1, (old[2].clone() + &old[3]).as_bytes());
        let mut rebuilt = text.as_bytes()[..r.keep].to_vec();
        for (_, bytes) in &r.moved {
            rebuilt.extend_from_slice(bytes);
        }
        assert_eq!(
            rebuilt,
            text.as_bytes(),
            "every byte is kept or moved, in order"
        );
    }

    #[test]
    fn the_new_block_always_stays_and_foreign_text_goes_with_the_block_after_it() {
        let new = block("2026-12-01 09:00:00", 50);
        let foreign = "### foreign block 0\n\nwritten by hand\n\n";
        let old = block("2026-11-30 10:00:00", 4);
        let text = format!("{new}{foreign}{old}");
        let r = rotate(
            text.as_bytes(),
            new.len(),
            Some(&start()),
            "2026-12",
            100,
            50,
        )
        .unwrap();
        assert_eq!(r.keep, new.len());
        assert_eq!(
            r.moved,
            [("2026-11".into(), format!("{foreign}{old}").into_bytes())]
        );
    }

    #[test]
    fn without_recognisable_blocks_the_old_text_moves_as_one_under_this_month() {
        let new = "## 2026-12-01 09:00:00 (2)\n".to_string();
        let old = "## 2026-11-30 10:00:00 (1)\n".repeat(20);
        let text = format!("{new}{old}");
        // A template without the time: no block can be told apart.
        let r = rotate(text.as_bytes(), new.len(), None, "2026-12", 100, 50).unwrap();
        assert_eq!(r.keep, new.len());
        assert_eq!(r.moved, [("2026-12".into(), old.clone().into_bytes())]);
        // With the user's prefix, the blocks are found.
        let user = BlockStart {
            prefix: "## ".into(),
        };
        let r = rotate(text.as_bytes(), new.len(), Some(&user), "2026-12", 100, 60).unwrap();
        assert_eq!(r.keep, new.len() + 27);
        assert_eq!(r.moved[0].0, "2026-11");
        assert_eq!(r.moved[0].1.len(), old.len() - 27);
    }

    #[test]
    fn a_line_that_only_looks_like_a_block_start_is_not_one() {
        let s = start();
        assert_eq!(s.month(b"### 2026-11-30 10:00:00 Update"), Some("2026-11"));
        assert_eq!(s.month(b"### 2026-11-30 10:00 Update"), None);
        assert_eq!(s.month(b"#### 2026-11-30 10:00:00"), None);
        assert_eq!(s.month(b"- ### 2026-11-30 10:00:00"), None);
        assert_eq!(archive_path("2026-11"), "changelog/2026-11.md");
    }
}

//! Offsets files: `topic,partition,offset` per line, no header, the format
//! Kafka's `kafka-consumer-groups --reset-offsets --export` writes and its
//! `--from-file` reads. Undo files are written in it, and `--from-file` and
//! `sluice offsets undo` read it, so files move between the two tools.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::TopicPartition;

const FORMAT: &str = "each line is topic,partition,offset, e.g. orders,0,1200";

/// Why an offsets file cannot be used; says where and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("the offsets file has no offsets: {FORMAT}")]
    Empty,
}

/// Reads an offsets file. Blank lines are skipped, as is a first line
/// `topic,partition,offset` (a header some people add); anything else that
/// is not `topic,partition,offset` is an error naming the line.
pub fn parse(text: &str) -> Result<BTreeMap<TopicPartition, i64>, FileError> {
    let mut out = BTreeMap::new();
    let mut seen_at: BTreeMap<TopicPartition, usize> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || (out.is_empty() && l.eq_ignore_ascii_case("topic,partition,offset")) {
            continue;
        }
        let bad = |reason: String| FileError::Line { line, reason };
        let fields: Vec<&str> = l.split(',').map(str::trim).collect();
        let [topic, partition, offset] = fields[..] else {
            return Err(bad(format!(
                "{l:?} has {} field(s), not 3: {FORMAT}",
                fields.len()
            )));
        };
        if topic.is_empty() {
            return Err(bad(format!("the topic is empty: {FORMAT}")));
        }
        let partition: i32 = partition.parse().ok().filter(|p| *p >= 0).ok_or_else(|| {
            bad(format!(
                "partition {partition:?} is not a whole number >= 0: {FORMAT}"
            ))
        })?;
        let offset: i64 = offset.parse().ok().filter(|o| *o >= 0).ok_or_else(|| {
            bad(format!(
                "offset {offset:?} is not a whole number >= 0: {FORMAT}"
            ))
        })?;
        let tp = (topic.to_string(), partition);
        if let Some(first) = seen_at.get(&tp) {
            return Err(bad(format!(
                "{topic}-{partition} is already on line {first}: keep one line per partition"
            )));
        }
        seen_at.insert(tp.clone(), line);
        out.insert(tp, offset);
    }
    if out.is_empty() {
        return Err(FileError::Empty);
    }
    Ok(out)
}

/// The file's text for `offsets`, in topic and partition order.
pub fn render(offsets: &BTreeMap<TopicPartition, i64>) -> String {
    let mut s = String::new();
    for ((t, p), o) in offsets {
        let _ = writeln!(s, "{t},{p},{o}");
    }
    s
}

/// Writes `offsets` to a new file at `path` (creating its directory) and
/// syncs it, so it is on disk before the commit it guards. An existing file
/// is never overwritten: it may be the only way back from an earlier reset.
pub fn write_new(path: &Path, offsets: &BTreeMap<TopicPartition, i64>) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(render(offsets).as_bytes())?;
    f.sync_all()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The new name is durable only once its directory is synced.
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The default undo file of a reset of `group` at `now_ms`:
/// `DIR/undo/GROUP-YYYYMMDDTHHMMSS.mmmZ.csv` (UTC). Characters a file name
/// cannot safely hold are replaced by `_`.
pub fn default_undo_path(data_dir: &Path, group: &str, now_ms: i64) -> PathBuf {
    let safe: String = group
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = if safe.is_empty() || safe.starts_with('.') {
        format!("_{safe}")
    } else {
        safe
    };
    data_dir
        .join("undo")
        .join(format!("{safe}-{}.csv", utc_stamp(now_ms)))
}

/// `YYYYMMDDTHHMMSS.mmmZ` for milliseconds since the epoch (proleptic
/// Gregorian, UTC), without a date library.
fn utc_stamp(ms: i64) -> String {
    let ms = ms.max(0);
    let days = ms / 86_400_000;
    let rem = ms % 86_400_000;
    let (h, m, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1_000 % 60,
        rem % 1_000,
    );
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{h:02}{m:02}{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: i32) -> TopicPartition {
        (t.to_string(), p)
    }

    #[test]
    fn round_trips_kafkas_format() {
        let offsets = BTreeMap::from([
            (tp("orders", 0), 12),
            (tp("orders", 5), 0),
            (tp("a.b", 2), 7),
        ]);
        let text = render(&offsets);
        assert_eq!(text, "a.b,2,7\norders,0,12\norders,5,0\n");
        assert_eq!(parse(&text), Ok(offsets));
    }

    #[test]
    fn blank_lines_spaces_crlf_and_a_header_are_accepted() {
        let got = parse("topic,partition,offset\r\n\r\n orders , 1 , 40 \r\norders,0,3\n").unwrap();
        assert_eq!(
            got,
            BTreeMap::from([(tp("orders", 0), 3), (tp("orders", 1), 40)])
        );
    }

    #[test]
    fn errors_name_the_line_and_the_fix() {
        for (text, line, needle) in [
            ("orders,0,1\norders,1\n", 2, "has 2 field(s), not 3"),
            ("orders,x,1\n", 1, "partition \"x\" is not a whole number"),
            ("orders,-1,1\n", 1, "partition \"-1\""),
            ("orders,0,ten\n", 1, "offset \"ten\""),
            ("orders,0,-5\n", 1, "offset \"-5\""),
            ("\n,0,1\n", 2, "the topic is empty"),
            ("orders,0,1,2\n", 1, "has 4 field(s)"),
            ("orders,0,1\norders,0,2\n", 2, "already on line 1"),
            (
                "orders,0,1\ntopic,partition,offset\n",
                2,
                "partition \"partition\"",
            ),
        ] {
            match parse(text) {
                Err(FileError::Line { line: l, reason }) => {
                    assert_eq!(l, line, "{text:?}: {reason}");
                    assert!(reason.contains(needle), "{text:?}: {reason}");
                    let shown = FileError::Line { line: l, reason }.to_string();
                    assert!(
                        shown.starts_with(&format!("line {line}:"))
                            && (shown.contains("e.g. orders,0,1200")
                                || shown.contains("one line per partition")),
                        "{shown}"
                    );
                }
                other => panic!("{text:?} gave {other:?}"),
            }
        }
        assert_eq!(parse("\n  \n"), Err(FileError::Empty));
        assert!(FileError::Empty
            .to_string()
            .contains("topic,partition,offset"));
    }

    #[test]
    fn write_new_creates_dirs_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("undo/deeper/g.csv");
        let offsets = BTreeMap::from([(tp("t", 0), 1)]);
        write_new(&path, &offsets).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "t,0,1\n");
        let again = write_new(&path, &BTreeMap::new()).unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "t,0,1\n");
    }

    #[test]
    fn default_undo_path_is_under_the_data_dir_with_a_utc_stamp() {
        // 2026-11-21T10:00:00.123Z
        let p = default_undo_path(Path::new("data"), "billing", 1_795_255_200_123);
        assert_eq!(p, Path::new("data/undo/billing-20261121T100000.123Z.csv"));
        let p = default_undo_path(Path::new("d"), "team/a b", 0);
        assert_eq!(p, Path::new("d/undo/team_a_b-19700101T000000.000Z.csv"));
        let p = default_undo_path(Path::new("d"), "..", 951_782_400_000);
        assert_eq!(p, Path::new("d/undo/_..-20000229T000000.000Z.csv"));
    }
}

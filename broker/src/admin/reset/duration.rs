//! `--by-duration` values: how long ago to move a group to.
//!
//! Kafka's tool takes ISO 8601 durations (`PT1H`, `P1DT12H`, `PT0.5S`);
//! people also type `1h`, `30m` or `1h30m`. Both are read here, into
//! milliseconds.

/// Milliseconds in one of each unit.
const SECOND: f64 = 1_000.0;
const MINUTE: f64 = 60.0 * SECOND;
const HOUR: f64 = 60.0 * MINUTE;
const DAY: f64 = 24.0 * HOUR;
const WEEK: f64 = 7.0 * DAY;

const FIX: &str =
    "write an ISO 8601 duration such as PT1H, PT30M or P1DT12H, or a short one such as 1h, 30m, 2d or 1h30m";

/// Parses `PT1H`-style or `1h30m`-style durations into milliseconds; zero
/// and negative durations are refused (a reset "0 ago" is `--to-latest`).
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let ms = if t.starts_with(['P', 'p']) {
        iso8601(t)
    } else {
        short(t)
    }
    .ok_or_else(|| format!("cannot read {s:?} as a duration: {FIX}"))?;
    if !(ms.is_finite() && ms >= 1.0) {
        return Err(format!(
            "{s:?} is no time at all: give a positive duration ({FIX}), or use --to-latest"
        ));
    }
    if ms > i64::MAX as f64 / 2.0 {
        return Err(format!("{s:?} reaches back before any timestamp: {FIX}"));
    }
    Ok(ms.round() as i64)
}

/// `P[nW][nD][T[nH][nM][n[.n]S]]`; years and months are refused because
/// their length depends on the date.
fn iso8601(s: &str) -> Option<f64> {
    let body = s.get(1..)?.to_ascii_uppercase();
    let (date, time) = match body.split_once('T') {
        Some((d, t)) => (d.to_string(), Some(t.to_string())),
        None => (body, None),
    };
    let mut total = 0.0;
    let mut any = false;
    for (number, unit) in fields(&date)? {
        total += number
            * match unit {
                'W' => WEEK,
                'D' => DAY,
                _ => return None,
            };
        any = true;
    }
    if let Some(time) = time {
        if time.is_empty() {
            return None;
        }
        let mut last = 0;
        for (number, unit) in fields(&time)? {
            let (rank, ms) = match unit {
                'H' => (1, HOUR),
                'M' => (2, MINUTE),
                'S' => (3, SECOND),
                _ => return None,
            };
            if rank <= last {
                return None;
            }
            last = rank;
            total += number * ms;
            any = true;
        }
    }
    any.then_some(total)
}

/// `NUMBER UNIT` pairs, e.g. "1D" or "1H30.5S"; `None` on anything else.
fn fields(s: &str) -> Option<Vec<(f64, char)>> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if len == 0 {
            return None;
        }
        let number: f64 = rest[..len].parse().ok()?;
        let unit = rest[len..].chars().next()?;
        out.push((number, unit));
        rest = &rest[len + unit.len_utf8()..];
    }
    Some(out)
}

/// `1h30m`, `15m`, `2d`, `500ms`, `90s`, `1w`: whole numbers with units, largest first
/// or not; repeated units add up.
fn short(s: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: f64 = rest[..digits].parse::<u64>().ok()? as f64;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        total += n * match unit {
            "ms" => 1.0,
            "s" => SECOND,
            "m" | "min" => MINUTE,
            "h" => HOUR,
            "d" => DAY,
            "w" => WEEK,
            _ => return None,
        };
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_durations_as_kafkas_tool_takes_them() {
        for (text, ms) in [
            ("PT1H", 3_600_000),
            ("PT30M", 1_800_000),
            ("pt15m", 900_000),
            ("P1D", 86_400_000),
            ("P1DT12H", 129_600_000),
            ("PT1H30M15S", 5_415_000),
            ("PT0.5S", 500),
            ("P2W", 1_209_600_000),
        ] {
            assert_eq!(parse_duration(text), Ok(ms), "{text}");
        }
    }

    #[test]
    fn short_durations() {
        for (text, ms) in [
            ("1h", 3_600_000),
            ("30m", 1_800_000),
            ("1h30m", 5_400_000),
            ("2d", 172_800_000),
            ("500ms", 500),
            (" 90s ", 90_000),
            ("1w", 604_800_000),
        ] {
            assert_eq!(parse_duration(text), Ok(ms), "{text}");
        }
    }

    #[test]
    fn malformed_durations_name_the_fix() {
        for bad in [
            "", "P", "PT", "P1Y", "P1M", "PT1H1H", "PT1M1H", "P1", "1", "h", "1x", "-1h", "1.5h",
            "PT-1H", "1h 30m", "P1DT",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("PT1H") && e.contains("1h30m"), "{bad:?}: {e}");
        }
        let e = parse_duration("0s").unwrap_err();
        assert!(e.contains("--to-latest"), "{e}");
        let e = parse_duration("PT0S").unwrap_err();
        assert!(e.contains("positive"), "{e}");
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("P9999999999999999W").is_err());
    }
}

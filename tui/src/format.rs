//! Turning bytes, times and sizes into text, and text back into durations and times.

use std::time::Duration;

/// How a key or value is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendered {
    Null,
    /// Valid JSON, re-indented with the original key order and number spelling kept.
    Json(String),
    Text(String),
    /// Not UTF-8: a hex dump.
    Hex(String),
}

impl Rendered {
    pub fn kind(&self) -> &'static str {
        match self {
            Rendered::Null => "null",
            Rendered::Json(_) => "json",
            Rendered::Text(_) => "text",
            Rendered::Hex(_) => "binary",
        }
    }

    pub fn text(&self) -> &str {
        match self {
            Rendered::Null => "(null)",
            Rendered::Json(s) | Rendered::Text(s) | Rendered::Hex(s) => s,
        }
    }
}

/// JSON (pretty) when it parses, UTF-8 text otherwise, hex for binary.
pub fn render_bytes(bytes: Option<&[u8]>) -> Rendered {
    let Some(bytes) = bytes else {
        return Rendered::Null;
    };
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            let t = s.trim_start();
            let looks_structured = t.starts_with('{') || t.starts_with('[');
            if looks_structured && serde_json::from_str::<serde_json::Value>(s).is_ok() {
                Rendered::Json(pretty_json(s))
            } else {
                Rendered::Text(s.to_string())
            }
        }
        Err(_) => Rendered::Hex(hex_dump(bytes)),
    }
}

/// One line for the message table: compact JSON/text with control characters made
/// visible, or hex.
pub fn one_line(bytes: Option<&[u8]>) -> String {
    match bytes {
        None => "(null)".to_string(),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => s
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect(),
            Err(_) => b.iter().map(|x| format!("{x:02x}")).collect(),
        },
    }
}

/// Re-indents JSON text that is known to be valid, keeping key order and literals.
fn pretty_json(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = s.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}') | Some(']')) {
                    if let Some(close) = chars.next() {
                        out.push(close);
                    }
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// `0000  de ad be ef ...  |....|`, 16 bytes a line.
pub fn hex_dump(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .enumerate()
        .map(|(i, chunk)| {
            let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
            let ascii: String = chunk
                .iter()
                .map(|&b| {
                    if b.is_ascii_graphic() || b == b' ' {
                        b as char
                    } else {
                        '.'
                    }
                })
                .collect();
            format!("{:04x}  {:<47}  |{}|", i * 16, hex.join(" "), ascii)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// "1.5 KiB", "3.0 GiB".
pub fn bytes_human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// "12,345,678".
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Milliseconds as "4s", "3m 20s", "2h 5m", "3d 4h".
pub fn duration_human(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Milliseconds since the epoch as "2024-05-01 12:00:00.000" (UTC).
pub fn timestamp_utc(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        None => format!("{ms} ms"),
    }
}

/// Parses "500ms", "2s", "15m", "2h", "1d", "1h30m".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let fix = || {
        format!("cannot read {s:?} as a duration: write a number and a unit, e.g. 500ms, 2s, 15m, 2h, 1d or 1h30m")
    };
    let s = s.trim();
    if s.is_empty() {
        return Err(fix());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return Err(fix());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| fix())?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(char::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            "d" => Duration::from_secs(n * 86_400),
            _ => return Err(fix()),
        };
        total += d;
    }
    Ok(total)
}

/// Parses "2024-05-01T12:00:00Z", "2024-05-01T12:00:00+02:00", "2024-05-01 12:00[:00]"
/// (UTC) or "2024-05-01" (midnight UTC) into milliseconds since the epoch.
pub fn parse_datetime(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    Err(format!(
        "cannot read {s:?} as a time: write 2024-05-01T12:00:00Z, 2024-05-01 12:00 (UTC) or 2024-05-01"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_are_pretty_printed_in_their_own_key_order() {
        let r = render_bytes(Some(br#"{"z":1,"a":[1, 2],"s":"x,{y}:\"q\"","e":{}}"#));
        assert_eq!(
            r,
            Rendered::Json(
                "{\n  \"z\": 1,\n  \"a\": [\n    1,\n    2\n  ],\n  \"s\": \"x,{y}:\\\"q\\\"\",\n  \"e\": {}\n}"
                    .to_string()
            )
        );
    }

    #[test]
    fn plain_text_and_scalars_stay_text() {
        assert_eq!(render_bytes(Some(b"hello")), Rendered::Text("hello".into()));
        assert_eq!(render_bytes(Some(b"42")), Rendered::Text("42".into()));
        assert_eq!(
            render_bytes(Some(b"{not json")),
            Rendered::Text("{not json".into())
        );
        assert_eq!(render_bytes(None), Rendered::Null);
    }

    #[test]
    fn binary_is_hex_dumped() {
        let r = render_bytes(Some(&[0xff, 0x00, b'A']));
        assert_eq!(r.kind(), "binary");
        assert_eq!(r.text(), format!("0000  {:<47}  |..A|", "ff 00 41"));
    }

    #[test]
    fn human_numbers() {
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(-1000), "-1,000");
        assert_eq!(thousands(12), "12");
        assert_eq!(bytes_human(512), "512 B");
        assert_eq!(bytes_human(1536), "1.5 KiB");
        assert_eq!(duration_human(200_000), "3m 20s");
        assert_eq!(duration_human(90_061_000), "1d 1h");
        assert_eq!(timestamp_utc(0), "1970-01-01 00:00:00.000");
    }

    #[test]
    fn durations_parse_with_units_and_name_the_fix() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        let e = parse_duration("2").unwrap_err();
        assert!(e.contains("e.g. 500ms, 2s"), "{e}");
        assert!(parse_duration("2 weeks").is_err());
    }

    #[test]
    fn datetimes_parse_in_utc_or_with_offset() {
        assert_eq!(parse_datetime("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(parse_datetime("1970-01-01 01:00"), Ok(3_600_000));
        assert_eq!(parse_datetime("1970-01-02"), Ok(86_400_000));
        assert_eq!(parse_datetime("1970-01-01T02:00:00+02:00"), Ok(0));
        assert!(parse_datetime("yesterday")
            .unwrap_err()
            .contains("2024-05-01"));
    }
}

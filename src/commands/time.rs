//! Times on the command line and in output: RFC 3339, `now`, `now-10m`; 90 kHz since the epoch inside.

use std::time::{SystemTime, UNIX_EPOCH};

/// Parses `2026-11-24T18:00:00Z`, `now`, or `now-<duration>` (e.g. `now-10m`) into 90 kHz units since the epoch.
pub fn parse_time_90k(s: &str, field: &str) -> Result<i64, String> {
    let t = s.trim();
    if let Some(rest) = t.strip_prefix("now") {
        let now = now_90k();
        if rest.is_empty() {
            return Ok(now);
        }
        let ago = rest
            .strip_prefix('-')
            .ok_or_else(|| format!("{field}: {s:?}: after \"now\" only \"-DURATION\" is allowed, e.g. now-10m"))?;
        let d = crate::config::units::parse_duration(ago).map_err(|e| format!("{field}: {e}"))?;
        return Ok(now - (d.as_millis() as i64) * 90);
    }
    let ts: jiff::Timestamp = t
        .parse()
        .map_err(|e| format!("{field}: {s:?} is not an RFC 3339 time such as 2026-11-24T18:00:00Z ({e})"))?;
    Ok(ts.as_millisecond() * 90)
}

pub fn now_90k() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_millis() as i64) * 90
}

/// RFC 3339 with milliseconds, UTC.
pub fn format_90k(t: i64) -> String {
    match jiff::Timestamp::from_millisecond(t.div_euclid(90)) {
        Ok(ts) => format!("{ts:.3}"),
        Err(_) => format!("<time {t}>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = parse_time_90k("2026-11-24T18:00:00.250Z", "--from").unwrap();
        assert_eq!(t, (1_795_543_200_000 + 250) * 90);
        assert_eq!(format_90k(t), "2026-11-24T18:00:00.250Z");
        let n = parse_time_90k("now-10m", "--from").unwrap();
        assert!((now_90k() - n - 600 * 90_000).abs() < 90_000);
        assert!(parse_time_90k("yesterday", "--from").unwrap_err().contains("--from"));
    }
}

//! Where a segment lives: `chNNN/YYYY-MM-DD/YYYYMMDDTHHMMSS.mmmZ.mp4` (UTC), and back.

use std::path::{Path, PathBuf};

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// 90 kHz ticks per millisecond.
pub const TICKS_PER_MS: i64 = 90;

/// The millisecond a 90 kHz time falls in (rounding towards the past).
pub fn ms_floor(time_90k: i64) -> i64 {
    time_90k.div_euclid(TICKS_PER_MS)
}

/// `chNNN` for a channel (at least three digits).
pub fn channel_dir(channel: u32) -> String {
    format!("ch{channel:03}")
}

/// The path of a segment relative to its volume. `dup` > 0 disambiguates two segments of a
/// channel starting in the same millisecond (`...Z-1.mp4`). None if the time is out of range.
pub fn segment_rel_path(channel: u32, start_ms: i64, dup: u32) -> Option<PathBuf> {
    let ts = Timestamp::from_millisecond(start_ms).ok()?;
    let dt = ts.to_zoned(TimeZone::UTC).datetime();
    let date = format!("{:04}-{:02}-{:02}", dt.year(), dt.month(), dt.day());
    let mut name = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.subsec_nanosecond() / 1_000_000
    );
    if dup > 0 {
        name.push_str(&format!("-{dup}"));
    }
    name.push_str(".mp4");
    Some(PathBuf::from(channel_dir(channel)).join(date).join(name))
}

/// Parses `chNNN` into the channel number.
pub fn parse_channel_dir(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("ch")?;
    if digits.len() < 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Parses a segment file name (`20261124T184220.123Z.mp4`, optionally `...Z-2.mp4`) into its
/// start in milliseconds since the epoch.
pub fn parse_segment_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".mp4")?;
    let stem = match stem.split_once("Z-") {
        Some((head, dup)) if !dup.is_empty() && dup.bytes().all(|b| b.is_ascii_digit()) => head,
        Some(_) => return None,
        None => stem.strip_suffix('Z')?,
    };
    // YYYYMMDDTHHMMSS.mmm
    let b = stem.as_bytes();
    if b.len() != 19 || b[8] != b'T' || b[15] != b'.' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i32> {
        let s = stem.get(r)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let dt = DateTime::new(
        i16::try_from(num(0..4)?).ok()?,
        i8::try_from(num(4..6)?).ok()?,
        i8::try_from(num(6..8)?).ok()?,
        i8::try_from(num(9..11)?).ok()?,
        i8::try_from(num(11..13)?).ok()?,
        i8::try_from(num(13..15)?).ok()?,
        num(16..19)? * 1_000_000,
    )
    .ok()?;
    Some(
        dt.to_zoned(TimeZone::UTC)
            .ok()?
            .timestamp()
            .as_millisecond(),
    )
}

/// Parses a relative segment path into (channel, start in ms), checking the date directory.
pub fn parse_segment_rel_path(rel: &Path) -> Option<(u32, i64)> {
    let mut parts = rel.iter();
    let channel = parse_channel_dir(parts.next()?.to_str()?)?;
    let date = parts.next()?.to_str()?;
    let start_ms = parse_segment_name(parts.next()?.to_str()?)?;
    if parts.next().is_some() {
        return None;
    }
    let expected = segment_rel_path(channel, start_ms, 0)?;
    let expected_date = expected.iter().nth(1)?.to_str()?;
    (date == expected_date).then_some((channel, start_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ms = 1_795_545_740_123; // 2026-11-24T18:42:20.123Z
        let p = segment_rel_path(7, ms, 0).unwrap();
        assert_eq!(p, Path::new("ch007/2026-11-24/20261124T184220.123Z.mp4"));
        assert_eq!(parse_segment_rel_path(&p), Some((7, ms)));
        let p2 = segment_rel_path(1234, ms, 2).unwrap();
        assert_eq!(
            p2,
            Path::new("ch1234/2026-11-24/20261124T184220.123Z-2.mp4")
        );
        assert_eq!(parse_segment_rel_path(&p2), Some((1234, ms)));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_segment_name("20261124T184220.123Z.mp4.tmp"), None);
        assert_eq!(parse_segment_name("20261324T184220.123Z.mp4"), None);
        assert_eq!(parse_segment_name("20261124T184220.12Z.mp4"), None);
        assert_eq!(parse_segment_name("20261124T184220.123Z-.mp4"), None);
        assert_eq!(parse_channel_dir("ch1"), None);
        assert_eq!(parse_channel_dir("chabc"), None);
        assert_eq!(parse_channel_dir("ch010"), Some(10));
        // Date directory must agree with the name.
        assert_eq!(
            parse_segment_rel_path(Path::new("ch001/2026-11-25/20261124T184220.123Z.mp4")),
            None
        );
    }

    #[test]
    fn floor_is_towards_past() {
        assert_eq!(ms_floor(179), 1);
        assert_eq!(ms_floor(180), 2);
        assert_eq!(ms_floor(-1), -1);
    }
}

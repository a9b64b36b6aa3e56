//! The camera tag: a `user_data_unregistered` SEI message (ITU-T H.264 §D.1.6 / H.265 §D.2.6)
//! with [`CAMSIM_SEI_UUID`] and the ASCII text `camsim cam=N frame=F`, sent before each access
//! unit, and [`find_camsim_tags`], which finds those tags in any buffer (e.g. a recorded MP4).

use std::io::Write;

use super::mp4::VideoCodec;

/// `uuid_iso_iec_11578` of camsim's SEI tag. It has no zero bytes, so it never needs emulation
/// prevention and appears verbatim in a recording.
pub const CAMSIM_SEI_UUID: [u8; 16] = [
    0x75, 0x6e, 0x64, 0x73, 0x74, 0x75, 0x64, 0x79, 0xca, 0x45, 0x5e, 0xb1, 0x9a, 0x3c, 0x11, 0xd7,
];

/// SEI payloadType of user_data_unregistered (H.264 Annex D.1, H.265 Annex D.2).
const USER_DATA_UNREGISTERED: u8 = 5;
/// Longest text: `camsim cam=4294967295 frame=18446744073709551615`.
const MAX_TEXT: usize = 48;
const PREFIX: &[u8] = b"camsim cam=";

/// Appends a complete SEI NAL unit (header included) tagging `camera`/`frame` to `out`.
pub(crate) fn write_tag_nal(codec: VideoCodec, camera: u32, frame: u64, out: &mut Vec<u8>) {
    let mut text = [0u8; MAX_TEXT];
    let text_len = {
        let mut cursor = &mut text[..];
        // Cannot fail: MAX_TEXT holds the longest possible text.
        let _ = write!(cursor, "camsim cam={camera} frame={frame}");
        MAX_TEXT - cursor.len()
    };
    match codec {
        // nal_ref_idc 0, nal_unit_type 6 (H.264 Table 7-1).
        VideoCodec::H264 => out.push(0x06),
        // forbidden 0, nal_unit_type 39 PREFIX_SEI_NUT, nuh_layer_id 0, tid+1 = 1 (H.265 §7.3.1.2).
        VideoCodec::H265 => out.extend_from_slice(&[39 << 1, 0x01]),
    }
    // sei_rbsp: last_payload_type_byte, last_payload_size_byte (< 255), payload, then
    // rbsp_trailing_bits (§7.3.2.3 / §7.3.2.4).
    let payload_size = (CAMSIM_SEI_UUID.len() + text_len) as u8;
    let rbsp = [USER_DATA_UNREGISTERED, payload_size]
        .into_iter()
        .chain(CAMSIM_SEI_UUID)
        .chain(text[..text_len].iter().copied())
        .chain([0x80]);
    push_escaped(rbsp, out);
}

/// Appends RBSP bytes with emulation prevention (H.264 §7.4.1, H.265 §7.4.2): an 0x03 is
/// inserted after two zero bytes when the next byte is 0x00..=0x03.
fn push_escaped(rbsp: impl Iterator<Item = u8>, out: &mut Vec<u8>) {
    let mut zeros = 0;
    for b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
}

/// Finds every camsim tag in `data` (raw NALs, RTP payloads, or a whole MP4 file: the recorder
/// stores NALs length-prefixed, so the tag appears verbatim) and returns `(camera, frame)` in
/// the order found.
pub fn find_camsim_tags(data: &[u8]) -> Vec<(u32, u64)> {
    let mut tags = Vec::new();
    let mut pos = 0;
    while let Some(off) = find(&data[pos..], &CAMSIM_SEI_UUID) {
        let start = pos + off + CAMSIM_SEI_UUID.len();
        let end = (start + MAX_TEXT + 8).min(data.len());
        if let Some(tag) = parse_text(&unescape(&data[start..end])) {
            tags.push(tag);
        }
        pos = start;
    }
    tags
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..].iter().position(|&b| b == first) {
            None => return None,
            Some(p) => {
                i += p;
                if hay.get(i..i + needle.len()) == Some(needle) {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// Removes emulation prevention bytes (00 00 03 → 00 00).
fn unescape(escaped: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut zeros = 0;
    for &b in escaped {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

/// Parses `camsim cam=N frame=F` at the start of `text`.
fn parse_text(text: &[u8]) -> Option<(u32, u64)> {
    let rest = text.strip_prefix(PREFIX)?;
    let (cam, rest) = digits(rest)?;
    let rest = rest.strip_prefix(b" frame=")?;
    let (frame, _) = digits(rest)?;
    Some((u32::try_from(cam).ok()?, frame))
}

fn digits(s: &[u8]) -> Option<(u64, &[u8])> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let v = std::str::from_utf8(&s[..n]).ok()?.parse().ok()?;
    Some((v, &s[n..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_round_trips_for_both_codecs() {
        let mut buf = vec![1, 2, 3];
        write_tag_nal(VideoCodec::H264, 7, 123, &mut buf);
        assert_eq!(buf[3], 0x06);
        buf.extend_from_slice(&[0, 0, 0, 9]); // a following length prefix, as in MP4
        write_tag_nal(VideoCodec::H265, 4_294_967_295, u64::MAX, &mut buf);
        assert_eq!(
            find_camsim_tags(&buf),
            vec![(7, 123), (4_294_967_295, u64::MAX)]
        );
    }

    #[test]
    fn emulation_prevention_is_applied_and_undone() {
        let mut out = Vec::new();
        push_escaped([0u8, 0, 1, 0, 0, 0, 0, 3, 7].into_iter(), &mut out);
        assert_eq!(out, [0, 0, 3, 1, 0, 0, 3, 0, 0, 3, 3, 7]);
        assert_eq!(unescape(&out), [0, 0, 1, 0, 0, 0, 0, 3, 7]);
        // A tag whose text went through escaping is still found.
        let mut data = CAMSIM_SEI_UUID.to_vec();
        data.extend_from_slice(b"camsim cam=1 frame=5\x80");
        assert_eq!(find_camsim_tags(&data), vec![(1, 5)]);
    }

    #[test]
    fn ignores_uuid_without_valid_text() {
        let mut data = CAMSIM_SEI_UUID.to_vec();
        data.extend_from_slice(b"camsim cam=x");
        data.extend_from_slice(&CAMSIM_SEI_UUID[..8]);
        assert!(find_camsim_tags(&data).is_empty());
    }
}

//! What a visual sample entry says: frame size (ISO/IEC 14496-12 §12.1.3) and the RFC 6381
//! codec string from its `avcC` (ISO/IEC 14496-15 §5.3.3) or `hvcC` (§8.3.3, Annex E.3).

use super::boxes::{children, parse_header, KindDisplay};

/// Bytes of a `VisualSampleEntry` body before its child boxes: SampleEntry (8) + 70.
const VISUAL_FIELDS_LEN: usize = 78;

/// Codec string, width and height of a complete visual sample entry box.
pub(crate) fn describe(entry: &[u8]) -> Result<(String, u16, u16), String> {
    let header = parse_header(entry).map_err(|p| format!("sample entry: {p}"))?;
    if header.size != entry.len() as u64 {
        return Err(format!(
            "sample entry: box says {} bytes, have {}",
            header.size,
            entry.len()
        ));
    }
    let kind = header.kind;
    let body = &entry[header.header_len as usize..];
    if body.len() < VISUAL_FIELDS_LEN {
        return Err(format!(
            "sample entry '{}' is too short for a visual sample entry",
            KindDisplay(kind)
        ));
    }
    // reserved(6) data_reference_index(2) pre_defined(2) reserved(2) pre_defined(12) width height
    let width = u16::from_be_bytes([body[24], body[25]]);
    let height = u16::from_be_bytes([body[26], body[27]]);
    let boxes = &body[VISUAL_FIELDS_LEN..];
    let codec = match &kind {
        b"avc1" | b"avc3" => avc_codec(&kind, config(boxes, b"avcC")?)?,
        b"hvc1" | b"hev1" => hevc_codec(&kind, config(boxes, b"hvcC")?)?,
        other if other.iter().all(|b| b.is_ascii_alphanumeric()) => {
            String::from_utf8_lossy(other).into_owned()
        }
        _ => {
            return Err(format!(
                "sample entry type '{}' is not a codec name",
                KindDisplay(kind)
            ))
        }
    };
    Ok((codec, width, height))
}

fn config<'a>(boxes: &'a [u8], kind: &[u8; 4]) -> Result<&'a [u8], String> {
    for child in children(boxes) {
        let child = child.map_err(|e| format!("sample entry: {e}"))?;
        if &child.kind == kind {
            return Ok(child.body);
        }
    }
    Err(format!("sample entry has no '{}'", KindDisplay(*kind)))
}

/// `avc1.PPCCLL`: profile_idc, constraint flags, level_idc in hex (RFC 6381 §3.3).
fn avc_codec(kind: &[u8; 4], avcc: &[u8]) -> Result<String, String> {
    match avcc {
        [1, profile, compat, level, ..] => Ok(format!(
            "{}.{profile:02X}{compat:02X}{level:02X}",
            String::from_utf8_lossy(kind)
        )),
        _ => Err("avcC is truncated or not version 1".to_owned()),
    }
}

/// `hvc1.[A-C]<profile>.<compat, bits reversed, hex>.<L|H><level>.<constraint bytes>`
/// (ISO/IEC 14496-15 Annex E.3; trailing zero constraint bytes dropped, at least one kept).
fn hevc_codec(kind: &[u8; 4], hvcc: &[u8]) -> Result<String, String> {
    let Some(fields) = hvcc.get(..13) else {
        return Err("hvcC is truncated".to_owned());
    };
    if fields[0] != 1 {
        return Err(format!("hvcC version {} is unknown", fields[0]));
    }
    let space = match fields[1] >> 6 {
        0 => "",
        1 => "A",
        2 => "B",
        _ => "C",
    };
    let tier = if fields[1] & 0x20 != 0 { 'H' } else { 'L' };
    let profile_idc = fields[1] & 0x1f;
    let compat = u32::from_be_bytes([fields[2], fields[3], fields[4], fields[5]]).reverse_bits();
    let level = fields[12];
    let mut constraints = &fields[6..12];
    while let [head @ .., 0] = constraints {
        if head.is_empty() {
            break;
        }
        constraints = head;
    }
    let mut s = format!(
        "{}.{space}{profile_idc}.{compat:X}.{tier}{level}",
        String::from_utf8_lossy(kind)
    );
    for b in constraints {
        s.push_str(&format!(".{b:02X}"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &[u8; 4], config_kind: &[u8; 4], config: &[u8]) -> Vec<u8> {
        let mut body = vec![0u8; VISUAL_FIELDS_LEN];
        body[7] = 1;
        body[24..26].copy_from_slice(&1920u16.to_be_bytes());
        body[26..28].copy_from_slice(&1080u16.to_be_bytes());
        body.extend_from_slice(&((config.len() + 8) as u32).to_be_bytes());
        body.extend_from_slice(config_kind);
        body.extend_from_slice(config);
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn avc() {
        let e = entry(b"avc1", b"avcC", &[1, 0x64, 0x00, 0x28, 0xff, 0xe0, 0x00]);
        assert_eq!(
            describe(&e).unwrap(),
            ("avc1.640028".to_owned(), 1920, 1080)
        );
    }

    #[test]
    fn hevc_main_matches_retina_format() {
        // Main profile, compatibility flags 1 and 2, progressive-source constraint, level 3.0.
        let mut hvcc = vec![1, 0x01, 0x60, 0, 0, 0, 0xb0, 0, 0, 0, 0, 0, 90];
        hvcc.extend_from_slice(&[0xf0, 0, 0xfc, 0xfd, 0xf8, 0xf8, 0, 0, 0x0f, 0]);
        let e = entry(b"hvc1", b"hvcC", &hvcc);
        assert_eq!(describe(&e).unwrap().0, "hvc1.1.6.L90.B0");
        hvcc[1] = 0x21; // high tier
        hvcc[6] = 0;
        let e = entry(b"hvc1", b"hvcC", &hvcc);
        assert_eq!(describe(&e).unwrap().0, "hvc1.1.6.H90.00");
    }

    #[test]
    fn missing_config_is_an_error() {
        let e = entry(b"avc1", b"btrt", &[0; 12]);
        assert!(describe(&e).is_err());
        assert!(describe(&e[..40]).is_err());
    }
}

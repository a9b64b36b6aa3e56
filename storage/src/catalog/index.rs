//! The compact per-segment fragment index kept in `segment.fragments`, for seeking without
//! reading the file: a version byte, then per fragment `offset u64, base_time u64,
//! duration u32, samples u32, key u8`, all big-endian.

use crate::fmp4::FragmentInfo;

const VERSION: u8 = 1;
const ENTRY_LEN: usize = 8 + 8 + 4 + 4 + 1;

/// Appends one fragment's entry to an index blob (starting the blob if empty).
pub fn push(blob: &mut Vec<u8>, f: &FragmentInfo) {
    if blob.is_empty() {
        blob.push(VERSION);
    }
    blob.extend_from_slice(&f.offset.to_be_bytes());
    blob.extend_from_slice(&f.base_time.to_be_bytes());
    blob.extend_from_slice(&u32::try_from(f.duration).unwrap_or(u32::MAX).to_be_bytes());
    blob.extend_from_slice(&f.samples.to_be_bytes());
    blob.push(u8::from(f.starts_with_key));
}

/// Encodes a whole list.
pub fn encode(frags: &[FragmentInfo]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(1 + frags.len() * ENTRY_LEN);
    for f in frags {
        push(&mut blob, f);
    }
    blob
}

/// Decodes a blob; `file_len` (the segment's durable length) gives the last fragment's length.
/// None if the blob is malformed.
pub fn decode(blob: &[u8], file_len: u64) -> Option<Vec<FragmentInfo>> {
    let Some((&version, body)) = blob.split_first() else {
        return Some(Vec::new());
    };
    if version != VERSION || body.len() % ENTRY_LEN != 0 {
        return None;
    }
    let mut out: Vec<FragmentInfo> = Vec::with_capacity(body.len() / ENTRY_LEN);
    for e in body.chunks_exact(ENTRY_LEN) {
        let u64_at = |i: usize| u64::from_be_bytes(e[i..i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| u32::from_be_bytes(e[i..i + 4].try_into().unwrap_or_default());
        let offset = u64_at(0);
        if let Some(prev) = out.last_mut() {
            prev.len = offset.checked_sub(prev.offset)?;
        }
        out.push(FragmentInfo {
            offset,
            len: 0,
            base_time: u64_at(8),
            duration: u64::from(u32_at(16)),
            samples: u32_at(20),
            starts_with_key: e[24] != 0,
        });
    }
    if let Some(last) = out.last_mut() {
        last.len = file_len.checked_sub(last.offset)?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let frags = vec![
            FragmentInfo {
                offset: 700,
                len: 1000,
                base_time: 0,
                duration: 90_000,
                samples: 25,
                starts_with_key: true,
            },
            FragmentInfo {
                offset: 1700,
                len: 500,
                base_time: 90_000,
                duration: 36_000,
                samples: 10,
                starts_with_key: false,
            },
        ];
        let blob = encode(&frags);
        assert_eq!(blob.len(), 1 + 2 * ENTRY_LEN);
        assert_eq!(decode(&blob, 2200).unwrap(), frags);
        assert_eq!(decode(&[], 0).unwrap(), vec![]);
        assert!(decode(&blob[..blob.len() - 1], 2200).is_none());
        assert!(decode(&blob, 1000).is_none(), "file shorter than the index");
    }
}

//! Turns NAL units into RTP payloads: single NAL unit packets, and fragmentation units for NALs
//! larger than [`MAX_PAYLOAD`] (H.264 FU-A, RFC 6184 §5.8; H.265 FU, RFC 7798 §4.4.3).

use std::ops::Range;

use super::mp4::VideoCodec;

/// Largest RTP payload produced, so a packet with its headers fits a 1500-byte Ethernet MTU.
pub(crate) const MAX_PAYLOAD: usize = 1400;

/// H.264 FU-A payload type (RFC 6184 §5.2, Table 1).
const H264_FU_A: u8 = 28;
/// H.265 fragmentation unit payload type (RFC 7798 §4.4.3).
const H265_FU: u8 = 49;

/// Appends the RTP payloads carrying `nal` to `store`, and the range of each payload to
/// `packets`. `nal` starts with its NAL unit header and must be at least that long.
pub(crate) fn packetize_nal(
    codec: VideoCodec,
    nal: &[u8],
    store: &mut Vec<u8>,
    packets: &mut Vec<Range<usize>>,
) {
    if nal.len() <= MAX_PAYLOAD {
        // Single NAL unit packet (RFC 6184 §5.6, RFC 7798 §4.4.1): the NAL as is.
        let start = store.len();
        store.extend_from_slice(nal);
        packets.push(start..store.len());
        return;
    }
    match codec {
        VideoCodec::H264 => {
            // FU indicator: F and NRI of the NAL, type 28; FU header: S, E, R=0, NAL type.
            let indicator = (nal[0] & 0xE0) | H264_FU_A;
            let nal_type = nal[0] & 0x1F;
            fragment(&nal[1..], &[indicator], nal_type, store, packets);
        }
        VideoCodec::H265 => {
            // PayloadHdr: the NAL header with Type = 49 (F, LayerId and TID kept);
            // FU header: S, E, FuType (6 bits).
            let hdr = [(nal[0] & 0x81) | (H265_FU << 1), nal[1]];
            let nal_type = (nal[0] >> 1) & 0x3F;
            fragment(&nal[2..], &hdr, nal_type, store, packets);
        }
    }
}

/// Splits `body` (the NAL without its header) into fragmentation units, each `prefix` + FU
/// header (S/E bits | `nal_type`) + a piece of `body`.
fn fragment(
    body: &[u8],
    prefix: &[u8],
    nal_type: u8,
    store: &mut Vec<u8>,
    packets: &mut Vec<Range<usize>>,
) {
    let piece = MAX_PAYLOAD - prefix.len() - 1;
    let n = body.len().div_ceil(piece);
    for (i, chunk) in body.chunks(piece).enumerate() {
        let mut fu_header = nal_type;
        if i == 0 {
            fu_header |= 0x80; // S
        }
        if i + 1 == n {
            fu_header |= 0x40; // E
        }
        let start = store.len();
        store.extend_from_slice(prefix);
        store.push(fu_header);
        store.extend_from_slice(chunk);
        packets.push(start..store.len());
    }
}

/// Reassembles payloads made by [`packetize_nal`] (test helper and self-check).
#[cfg(test)]
pub(crate) fn depacketize(codec: VideoCodec, payloads: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut nals = Vec::new();
    let mut cur: Option<Vec<u8>> = None;
    for p in payloads {
        match codec {
            VideoCodec::H264 if p[0] & 0x1F == H264_FU_A => {
                if p[1] & 0x80 != 0 {
                    cur = Some(vec![(p[0] & 0xE0) | (p[1] & 0x1F)]);
                }
                cur.as_mut().unwrap().extend_from_slice(&p[2..]);
                if p[1] & 0x40 != 0 {
                    nals.push(cur.take().unwrap());
                }
            }
            VideoCodec::H265 if (p[0] >> 1) & 0x3F == H265_FU => {
                if p[2] & 0x80 != 0 {
                    cur = Some(vec![(p[0] & 0x81) | ((p[2] & 0x3F) << 1), p[1]]);
                }
                cur.as_mut().unwrap().extend_from_slice(&p[3..]);
                if p[2] & 0x40 != 0 {
                    nals.push(cur.take().unwrap());
                }
            }
            _ => nals.push(p.to_vec()),
        }
    }
    nals
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(codec: VideoCodec, nal: Vec<u8>, want_packets: usize) {
        let mut store = Vec::new();
        let mut packets = Vec::new();
        packetize_nal(codec, &nal, &mut store, &mut packets);
        assert_eq!(packets.len(), want_packets);
        assert!(packets.iter().all(|r| r.len() <= MAX_PAYLOAD));
        let payloads: Vec<&[u8]> = packets.iter().map(|r| &store[r.clone()]).collect();
        assert_eq!(depacketize(codec, &payloads), vec![nal]);
    }

    #[test]
    fn h264_single_and_fu_a() {
        round_trip(VideoCodec::H264, vec![0x65; MAX_PAYLOAD], 1);
        let big: Vec<u8> = std::iter::once(0x65)
            .chain((0..5000).map(|i| i as u8))
            .collect();
        round_trip(VideoCodec::H264, big, 4);
    }

    #[test]
    fn h265_single_and_fu() {
        round_trip(VideoCodec::H265, vec![0x26, 0x01, 7, 8], 1);
        let big: Vec<u8> = [0x26, 0x01]
            .into_iter()
            .chain((0..2795).map(|i| i as u8))
            .collect();
        round_trip(VideoCodec::H265, big, 3); // 2795 bytes / 1397 per FU = 3
    }
}

//! One session's RTP stream over TCP interleaved (RFC 2326 §10.12, RFC 3550 §5.1): loops a
//! pre-packetized clip with continuous sequence numbers and timestamps, building only the
//! 4-byte interleave header and 12-byte RTP header per packet and writing each frame with one
//! vectored write of shared payloads.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::clip::{Clip, CLOCK_RATE};
use super::mp4::VideoCodec;
use super::sdp::PAYLOAD_TYPE;
use super::sei;

/// Interleave header (`$`, channel, length) + fixed RTP header.
pub(crate) const HEADER_LEN: usize = 4 + 12;

/// State of one session's outgoing RTP stream.
#[derive(Debug)]
pub(crate) struct RtpSender {
    camera: u32,
    clip: Arc<Clip>,
    stream: RtpStream,
    /// Decode time of the next frame since the session start, 90 kHz. Grows across loops and
    /// clip switches, so timestamps never jump backwards.
    elapsed_90k: u64,
    /// Index of the next frame in `clip`.
    frame_idx: usize,
    /// Frames sent since the session start (the SEI tag's frame number).
    frames_sent: u64,
    /// Headers (and the SEI tag) of the frame being written; reused.
    scratch: Vec<u8>,
}

/// `elapsed` ticks of real time as counted by a clock running `ppm` parts per million fast.
pub(crate) fn drifted(elapsed: u64, ppm: i32) -> u64 {
    let d = i128::from(elapsed) + i128::from(elapsed) * i128::from(ppm) / 1_000_000;
    u64::try_from(d.max(0)).unwrap_or(u64::MAX)
}

/// What every RTP stream of a session (video, audio) keeps: its interleaved channel, SSRC,
/// next sequence number and random timestamp base (RFC 3550 §5.1), and the session clock it is
/// paced on, with the camera's clock error.
#[derive(Debug)]
pub(crate) struct RtpStream {
    pub channel: u8,
    pub ssrc: u32,
    /// Sequence number of the next packet.
    pub seq: u16,
    /// RTP timestamp at the session start.
    ts_base: u32,
    /// When the session started playing; deadlines are relative to it.
    pub start: Instant,
    clock_rate: u32,
    /// How many ppm the camera's RTP clock runs fast (negative: slow) against the pacing.
    clock_ppm: i32,
}

impl RtpStream {
    pub(crate) fn new(channel: u8, clock_rate: u32, clock_ppm: i32) -> Self {
        RtpStream {
            channel,
            ssrc: rand::random(),
            seq: rand::random(),
            ts_base: rand::random(),
            start: Instant::now(),
            clock_rate: clock_rate.max(1),
            clock_ppm,
        }
    }

    /// The RTP timestamp of media time `elapsed` (clock ticks since the start) + `offset`.
    /// Truncation to 32 bits is the RTP timestamp's modular arithmetic.
    pub(crate) fn timestamp(&self, elapsed: u64, offset: i64) -> u32 {
        self.ts_base
            .wrapping_add(drifted(elapsed, self.clock_ppm) as u32)
            .wrapping_add(offset as u32)
    }

    /// When media time `elapsed` is due under realtime pacing.
    pub(crate) fn deadline(&self, elapsed: u64) -> Instant {
        let nanos = u128::from(elapsed) * 1_000_000_000 / u128::from(self.clock_rate);
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Moves RTP time by `by` from the next packet on (a clock jump, for faults).
    pub(crate) fn jump(&mut self, by: Duration, forward: bool) {
        let n = (by.as_secs_f64() * f64::from(self.clock_rate)) as u32;
        self.ts_base = if forward {
            self.ts_base.wrapping_add(n)
        } else {
            self.ts_base.wrapping_sub(n)
        };
    }
}

impl RtpSender {
    /// A stream of `clip` for `camera` on interleaved `channel`, with random SSRC, initial
    /// sequence number and timestamp; its RTP clock runs `clock_ppm` ppm fast.
    pub(crate) fn new(camera: u32, clip: Arc<Clip>, channel: u8, clock_ppm: i32) -> Self {
        RtpSender {
            camera,
            clip,
            stream: RtpStream::new(channel, CLOCK_RATE as u32, clock_ppm),
            elapsed_90k: 0,
            frame_idx: 0,
            frames_sent: 0,
            scratch: Vec::with_capacity(4096),
        }
    }

    pub(crate) fn ssrc(&self) -> u32 {
        self.stream.ssrc
    }

    /// The interleaved channel RTP goes out on.
    pub(crate) fn channel(&self) -> u8 {
        self.stream.channel
    }

    /// Sequence number of the next packet (for RTP-Info, RFC 2326 §12.33).
    pub(crate) fn next_seq(&self) -> u16 {
        self.stream.seq
    }

    /// RTP timestamp of the next frame (for RTP-Info).
    pub(crate) fn next_rtptime(&self) -> u32 {
        self.rtp_timestamp(0)
    }

    pub(crate) fn codec(&self) -> VideoCodec {
        self.clip.codec
    }

    /// Starts the realtime clock: frame deadlines are relative to `now`.
    pub(crate) fn start(&mut self, now: Instant) {
        self.stream.start = now;
    }

    /// When the next frame is due under realtime pacing.
    pub(crate) fn next_deadline(&self) -> Instant {
        self.stream.deadline(self.elapsed_90k)
    }

    /// Whether the next frame is a key frame.
    pub(crate) fn next_is_key(&self) -> bool {
        self.clip.frames[self.frame_idx].is_key
    }

    /// Number of packets (SEI tag included) of the next frame.
    pub(crate) fn next_packet_count(&self) -> usize {
        self.clip.frames[self.frame_idx].packets.len() + 1
    }

    /// Continues with `clip` from its first frame (a key frame with in-band parameter sets);
    /// timestamps and sequence numbers go on.
    pub(crate) fn switch_clip(&mut self, clip: Arc<Clip>) {
        self.clip = clip;
        self.frame_idx = 0;
    }

    /// Moves RTP time by `by` from the next frame on (a clock jump, for faults).
    pub(crate) fn jump_rtp(&mut self, by: Duration, forward: bool) {
        self.stream.jump(by, forward);
    }

    fn rtp_timestamp(&self, cts_offset_90k: i64) -> u32 {
        self.stream.timestamp(self.elapsed_90k, cts_offset_90k)
    }

    /// Writes the next frame: the SEI tag after any in-band parameter sets, then the rest,
    /// marker bit on the last packet (RFC 6184 §5.1, RFC 7798 §4.1). With `limit`, only the
    /// first `limit` packets are written and the frame does not advance (used to cut a
    /// connection inside an access unit). Returns the bytes written.
    pub(crate) async fn send_frame<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        limit: Option<usize>,
    ) -> io::Result<usize> {
        let clip = Arc::clone(&self.clip);
        let frame = &clip.frames[self.frame_idx];
        let payloads = &clip.payloads[frame.packets.clone()];
        let ts = self.rtp_timestamp(frame.cts_offset_90k);
        let total = payloads.len() + 1;
        let count = limit.map_or(total, |l| l.min(total));
        let sei_at = frame.param_packets;

        // Headers, in send order; the SEI tag's NAL follows its header in `scratch`.
        self.scratch.clear();
        let mut sei_len = 0;
        let (channel, ssrc) = (self.stream.channel, self.stream.ssrc);
        let mut seq = self.stream.seq;
        for i in 0..count {
            let marker = i + 1 == total;
            if i == sei_at {
                let hdr = self.scratch.len();
                self.scratch.resize(hdr + HEADER_LEN, 0);
                // Capture order: with B-frames, sorting by presentation time sorts these.
                let capture_no = self.frames_sent.saturating_add_signed(frame.capture_shift);
                sei::write_tag_nal(clip.codec, self.camera, capture_no, &mut self.scratch);
                sei_len = self.scratch.len() - hdr - HEADER_LEN;
                let h = header(channel, PAYLOAD_TYPE, marker, seq, ts, ssrc, sei_len);
                self.scratch[hdr..hdr + HEADER_LEN].copy_from_slice(&h);
            } else {
                let p = &payloads[if i < sei_at { i } else { i - 1 }];
                let h = header(channel, PAYLOAD_TYPE, marker, seq, ts, ssrc, p.len());
                self.scratch.extend_from_slice(&h);
            }
            seq = seq.wrapping_add(1);
        }

        let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(count * 2);
        let mut off = 0;
        let mut bytes = 0;
        for i in 0..count {
            if i == sei_at {
                let len = HEADER_LEN + sei_len;
                iov.push(IoSlice::new(&self.scratch[off..off + len]));
                off += len;
                bytes += len;
            } else {
                let p = &payloads[if i < sei_at { i } else { i - 1 }];
                iov.push(IoSlice::new(&self.scratch[off..off + HEADER_LEN]));
                iov.push(IoSlice::new(p));
                off += HEADER_LEN;
                bytes += HEADER_LEN + p.len();
            }
        }
        write_all_vectored(w, &mut iov).await?;

        self.stream.seq = seq;
        if count == total {
            self.elapsed_90k += frame.duration_90k;
            self.frame_idx = (self.frame_idx + 1) % clip.frames.len();
            self.frames_sent += 1;
        }
        Ok(bytes)
    }

    /// Writes one burst of malformed interleaved data: an RTP packet with version 1, a
    /// fragmentation unit that starts and never ends, random bytes inside a `$` frame of the
    /// RTP channel, and a `$` frame too short for an RTP header. Returns the bytes written.
    pub(crate) async fn send_garbage<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
    ) -> io::Result<usize> {
        let ts = self.rtp_timestamp(0);
        let RtpStream {
            channel, ssrc, seq, ..
        } = self.stream;
        let mut buf = Vec::with_capacity(1024);
        // 1. Bad RTP version (RFC 3550 §5.1: V must be 2).
        let mut h = header(channel, PAYLOAD_TYPE, false, seq, ts, ssrc, 32);
        h[4] = 0x40 | (h[4] & 0x3F);
        buf.extend_from_slice(&h);
        buf.extend((0..32).map(|_| rand::random::<u8>()));
        // 2. Truncated FU: a start fragment of an IDR slice whose end never comes.
        let fu: &[u8] = match self.clip.codec {
            VideoCodec::H264 => &[0x7C, 0x85], // FU-A, NRI 3; S=1, type 5 (IDR)
            VideoCodec::H265 => &[49 << 1, 0x01, 0x80 | 19], // FU; S=1, type 19 (IDR_W_RADL)
        };
        let body: Vec<u8> = (0..200).map(|_| rand::random::<u8>()).collect();
        buf.extend_from_slice(&header(
            channel,
            PAYLOAD_TYPE,
            false,
            seq,
            ts,
            ssrc,
            fu.len() + body.len(),
        ));
        buf.extend_from_slice(fu);
        buf.extend_from_slice(&body);
        self.stream.seq = seq.wrapping_add(1);
        // 3. Random bytes inside a valid interleaved frame.
        buf.extend_from_slice(&[b'$', channel, 0x01, 0x2C]); // 300 bytes
        buf.extend((0..300).map(|_| rand::random::<u8>()));
        // 4. A frame too short to hold an RTP header.
        buf.extend_from_slice(&[b'$', channel, 0, 4, 0x80, PAYLOAD_TYPE, 0, 1]);
        w.write_all(&buf).await?;
        Ok(buf.len())
    }
}

/// Interleave header (RFC 2326 §10.12) + RTP fixed header (RFC 3550 §5.1) for a payload of
/// `payload_len` bytes.
pub(crate) fn header(
    channel: u8,
    payload_type: u8,
    marker: bool,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload_len: usize,
) -> [u8; HEADER_LEN] {
    // Payloads are at most MAX_PAYLOAD (1400) bytes, so the length always fits.
    let len = u16::try_from(12 + payload_len)
        .unwrap_or(u16::MAX)
        .to_be_bytes();
    let seq = seq.to_be_bytes();
    let ts = ts.to_be_bytes();
    let ssrc = ssrc.to_be_bytes();
    [
        b'$',
        channel,
        len[0],
        len[1],
        0x80, // V=2, P=0, X=0, CC=0
        (u8::from(marker) << 7) | payload_type,
        seq[0],
        seq[1],
        ts[0],
        ts[1],
        ts[2],
        ts[3],
        ssrc[0],
        ssrc[1],
        ssrc[2],
        ssrc[3],
    ]
}

/// `write_all` for vectored buffers: retries partial writes (the kernel may take only part of
/// a frame when the socket buffer fills).
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut bufs: &mut [IoSlice<'_>],
) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let n = w.write_vectored(bufs).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::packetize::depacketize;
    use super::*;
    use std::path::Path;

    /// Splits interleaved output into (marker, seq, ts, payload) RTP packets.
    fn rtp_packets(mut b: &[u8]) -> Vec<(bool, u16, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            assert_eq!(b[0], b'$');
            let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
            let p = &b[4..4 + len];
            assert_eq!(p[0], 0x80);
            out.push((
                p[1] & 0x80 != 0,
                u16::from_be_bytes([p[2], p[3]]),
                u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
                p[12..].to_vec(),
            ));
            b = &b[4 + len..];
        }
        out
    }

    #[tokio::test]
    async fn frames_loop_with_continuous_seq_and_timestamps() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/h264-360p25-small.mp4");
        let clip = Arc::new(Clip::load(&path).unwrap());
        let n = clip.frames.len();
        let mut s = RtpSender::new(9, clip.clone(), 0, 0);
        let (seq0, ts0) = (s.next_seq(), s.next_rtptime());
        let mut out = Vec::new();
        let mut frame_ts = Vec::new();
        for _ in 0..n + 2 {
            let before = out.len();
            let written = s.send_frame(&mut out, None).await.unwrap();
            assert_eq!(written, out.len() - before);
            let pkts = rtp_packets(&out[before..]);
            assert!(pkts.last().unwrap().0 && pkts.iter().filter(|p| p.0).count() == 1);
            assert!(pkts.iter().all(|p| p.2 == pkts[0].2));
            frame_ts.push(pkts[0].2);
        }
        let all = rtp_packets(&out);
        for (i, p) in all.iter().enumerate() {
            assert_eq!(p.1, seq0.wrapping_add(i as u16));
        }
        for (i, ts) in frame_ts.iter().enumerate() {
            assert_eq!(ts.wrapping_sub(ts0), 3600 * i as u32, "frame {i}");
        }
        // The loop point re-sends the key frame with SPS, PPS, then the tag for frame n.
        let payloads: Vec<&[u8]> = all.iter().map(|p| &p.3[..]).collect();
        let nals = depacketize(VideoCodec::H264, &payloads);
        let tags = sei::find_camsim_tags(&out);
        assert_eq!(tags.len(), n + 2);
        assert!(tags.iter().enumerate().all(|(i, &t)| t == (9, i as u64)));
        let idr_count = nals.iter().filter(|n| n[0] & 0x1F == 5).count();
        assert!(idr_count >= 4, "3 IDRs in the clip + 1 after the loop");
        assert_eq!(
            s.next_deadline() - s.stream.start,
            Duration::from_millis(40 * (n as u64 + 2))
        );
    }

    #[test]
    fn drifted_clock() {
        assert_eq!(drifted(90_000, 0), 90_000);
        assert_eq!(drifted(90_000_000, 2_000), 90_180_000);
        assert_eq!(drifted(90_000_000, -50_000), 85_500_000);
    }

    #[tokio::test]
    async fn limited_frame_is_cut_without_marker() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/h264-720p25.mp4");
        let clip = Arc::new(Clip::load(&path).unwrap());
        let mut s = RtpSender::new(1, clip, 0, 0);
        let total = s.next_packet_count();
        let mut out = Vec::new();
        s.send_frame(&mut out, Some(total / 2)).await.unwrap();
        let pkts = rtp_packets(&out);
        assert_eq!(pkts.len(), total / 2);
        assert!(pkts.iter().all(|p| !p.0));
    }
}

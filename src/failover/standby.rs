//! The hot-standby prebuffer: the latest frames of one camera, whole GOPs, bounded in time and
//! bytes, to be written ahead of the live stream when a takeover starts (issue #12).
//!
//! Pure: it takes ingest items and hands them back in order; the standby session that feeds it
//! and the takeover that drains it are `standbys`' business.

use std::collections::VecDeque;
use std::time::Duration;

use understudy_recorder::IngestItem;

/// One group of pictures: a key frame and what follows it, possibly ending its run.
#[derive(Debug, Default)]
struct Gop {
    items: Vec<IngestItem>,
    start_90k: i64,
    end_90k: i64,
    bytes: usize,
    /// A `SessionEnded` closed it: nothing may be appended.
    closed: bool,
}

/// The last `span` of a camera's frames in whole GOPs, within `max_bytes`.
#[derive(Debug)]
pub struct Prebuffer {
    span_90k: i64,
    max_bytes: usize,
    gops: VecDeque<Gop>,
    bytes: usize,
    /// Frames dropped because no key frame had started a GOP (or the budget cut the open one).
    dropped_frames: u64,
    /// The byte budget, not the span, trimmed the buffer last.
    short: bool,
}

impl Prebuffer {
    pub fn new(span: Duration, max_bytes: usize) -> Prebuffer {
        let span_90k = i64::try_from(span.as_micros() * 9 / 100).unwrap_or(i64::MAX);
        Prebuffer { span_90k, max_bytes, gops: VecDeque::new(), bytes: 0, dropped_frames: 0, short: false }
    }

    /// Adds one ingest item and trims the oldest whole GOPs that are no longer needed.
    pub fn push(&mut self, item: IngestItem) {
        match item {
            // A re-anchor ends the run just as the end of a session does.
            end @ (IngestItem::SessionEnded | IngestItem::Reanchored { .. }) => {
                if let Some(g) = self.gops.back_mut().filter(|g| !g.closed) {
                    g.items.push(end);
                    g.closed = true;
                }
            }
            // Audio belongs to the open GOP's span; with none open there is no run to join.
            IngestItem::Audio(a) => {
                let len = a.data.len();
                if let Some(g) = self.gops.back_mut().filter(|g| !g.closed) {
                    g.bytes += len;
                    g.items.push(IngestItem::Audio(a));
                    self.bytes += len;
                    self.trim();
                }
            }
            IngestItem::Frame(f) => {
                let open = self.gops.back().is_some_and(|g| !g.closed);
                if !f.key && !open {
                    self.dropped_frames += 1;
                    return;
                }
                if f.key {
                    self.gops.push_back(Gop { start_90k: f.time_90k, ..Gop::default() });
                }
                let len = f.data.len();
                if let Some(g) = self.gops.back_mut() {
                    g.end_90k = f.time_90k;
                    g.bytes += len;
                    g.items.push(IngestItem::Frame(f));
                }
                self.bytes += len;
                self.trim();
            }
        }
    }

    /// Drops the oldest GOPs while the rest still cover the span, then while over the budget.
    /// A single GOP over the budget is dropped whole (its count goes to `dropped_frames`); with
    /// nothing open, frames are dropped until the next key frame.
    fn trim(&mut self) {
        let newest = self.gops.back().map_or(0, |g| g.end_90k);
        while self.gops.len() > 1 && self.gops.get(1).is_some_and(|g| newest - g.start_90k >= self.span_90k) {
            self.pop_front();
        }
        if self.bytes > self.max_bytes {
            self.short = true;
            while self.bytes > self.max_bytes {
                let last = self.gops.len() == 1;
                let Some(g) = self.pop_front() else { break };
                if last {
                    self.dropped_frames += g.items.iter().filter(|i| matches!(i, IngestItem::Frame(_))).count() as u64;
                }
            }
        } else if self.held_90k() >= self.span_90k {
            self.short = false;
        }
    }

    fn pop_front(&mut self) -> Option<Gop> {
        let g = self.gops.pop_front()?;
        self.bytes -= g.bytes;
        Some(g)
    }

    fn held_90k(&self) -> i64 {
        match (self.gops.front(), self.gops.back()) {
            (Some(first), Some(last)) => last.end_90k - first.start_90k,
            _ => 0,
        }
    }

    /// Changes the byte budget (the memory split moves with the cameras' bitrates) and trims.
    pub fn set_max_bytes(&mut self, max_bytes: usize) {
        self.max_bytes = max_bytes;
        self.trim();
    }

    /// The span it aims to hold.
    pub fn span(&self) -> Duration {
        Duration::from_micros(u64::try_from(self.span_90k).unwrap_or(0) * 100 / 9)
    }

    /// How much footage is held, first frame to last.
    pub fn held(&self) -> Duration {
        Duration::from_micros(u64::try_from(self.held_90k()).unwrap_or(0) * 100 / 9)
    }

    /// Bytes of frame data held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the byte budget keeps the buffer shorter than its span.
    pub fn is_short(&self) -> bool {
        self.short
    }

    /// Frames discarded: before the first key frame, or with a GOP the budget cut.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames
    }

    /// Everything held, oldest first, each GOP starting with its key frame; empties the buffer.
    pub fn drain(&mut self) -> Vec<IngestItem> {
        self.bytes = 0;
        self.gops.drain(..).flat_map(|g| g.items).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use understudy_recorder::{Codec, Frame, VideoParams};

    use super::*;

    /// 25 fps, a key frame every `gop` frames, `size` bytes each.
    fn frames(n: usize, gop: usize, size: usize) -> Vec<IngestItem> {
        let params = Arc::new(VideoParams {
            codec: Codec::H264, rfc6381: "avc1.640028".into(), width: 16, height: 16, sample_entry: Bytes::new(),
            sps: None, frame_90k: None,
        });
        (0..n)
            .map(|i| {
                IngestItem::Frame(Frame {
                    time_90k: 1_000_000 + i as i64 * 3600, key: i % gop == 0, data: Bytes::from(vec![0u8; size]),
                    params: params.clone(), loss: 0, cts_offset: 0, audio: None,
                })
            })
            .collect()
    }

    fn times(items: &[IngestItem]) -> Vec<(i64, bool)> {
        items.iter().filter_map(|i| match i { IngestItem::Frame(f) => Some((f.time_90k, f.key)), _ => None }).collect()
    }

    #[test]
    fn holds_the_last_span_in_whole_gops() {
        // 2 s GOPs, 5 s span, 20 s of frames: the oldest GOP kept starts ≤ 5 s before the newest frame.
        let mut p = Prebuffer::new(Duration::from_secs(5), usize::MAX);
        for f in frames(500, 50, 100) {
            p.push(f);
        }
        assert!(p.held() >= Duration::from_secs(5) && p.held() < Duration::from_secs(7), "{:?}", p.held());
        assert!(!p.is_short());
        let t = times(&p.drain());
        assert!(t[0].1, "does not start with a key frame");
        // Consecutive: nothing missing between the first held frame and the newest.
        assert!(t.windows(2).all(|w| w[1].0 - w[0].0 == 3600));
        assert_eq!(t.last().unwrap().0, 1_000_000 + 499 * 3600);
        assert_eq!(p.bytes(), 0);
    }

    #[test]
    fn frames_before_the_first_key_frame_are_dropped() {
        let mut p = Prebuffer::new(Duration::from_secs(5), usize::MAX);
        for f in frames(60, 50, 10).into_iter().skip(10) {
            p.push(f);
        }
        assert_eq!(p.dropped_frames(), 40);
        assert_eq!(times(&p.drain()).len(), 10);
    }

    #[test]
    fn the_byte_budget_shortens_the_buffer_and_says_so() {
        // 1,000-byte frames, 2 s GOPs (50 kB), a 120 kB budget: at most 2 whole GOPs.
        let mut p = Prebuffer::new(Duration::from_secs(10), 120_000);
        for f in frames(1000, 50, 1000) {
            p.push(f);
            assert!(p.bytes() <= 120_000);
        }
        assert!(p.is_short());
        assert!(p.held() < Duration::from_secs(5), "{:?}", p.held());
        let t = times(&p.drain());
        assert!(t[0].1 && t.len() >= 50, "{} frames", t.len());
    }

    #[test]
    fn a_gop_larger_than_the_budget_is_dropped_whole() {
        let mut p = Prebuffer::new(Duration::from_secs(10), 5_000);
        for f in frames(103, 50, 1000) {
            p.push(f);
        }
        // Frames 0–5 and 50–55 overflowed their GOPs: each GOP went whole, with the frames
        // after it up to the next key frame. What is left starts at the key frame 100.
        assert_eq!(p.dropped_frames(), 100);
        let t = times(&p.drain());
        assert_eq!(t, (100..103).map(|i| (1_000_000 + i * 3600, i == 100)).collect::<Vec<_>>());
    }

    #[test]
    fn a_session_end_is_kept_between_runs() {
        let mut p = Prebuffer::new(Duration::from_secs(60), usize::MAX);
        for f in frames(10, 5, 10) {
            p.push(f);
        }
        p.push(IngestItem::SessionEnded);
        // A delta frame after the end is not decodable: dropped; the next run starts at a key.
        for f in frames(10, 5, 10).into_iter().skip(3) {
            p.push(f);
        }
        let items = p.drain();
        let ends = items.iter().position(|i| matches!(i, IngestItem::SessionEnded)).unwrap();
        assert_eq!(ends, 10);
        assert!(matches!(&items[ends + 1], IngestItem::Frame(f) if f.key));
        assert_eq!(p.dropped_frames(), 2);
    }
}

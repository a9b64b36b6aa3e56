//! The queue discipline between one channel's ingest task and its consumer: never block, drop
//! whole GOPs when the queue is full, and make every gap visible as `SessionEnded` followed by a
//! key frame.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{self, error::TrySendError};
use tracing::{debug, warn};

use crate::frame::{Frame, IngestItem};
use crate::ratelimit::RateLimit;
use crate::stats::ChannelStats;

/// The consumer dropped its receiver; there is no one left to record for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConsumerGone;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GateState {
    /// Frames of the current run are being delivered.
    Streaming,
    /// The next delivered frame must be a key frame.
    Resync {
        /// The consumer holds frames of a run it has not been told is over: a `SessionEnded`
        /// must be delivered before the next frame.
        boundary_owed: bool,
        /// Frames are being dropped for lack of queue space (one GOP counted).
        dropping: bool,
    },
}

const AT_BOUNDARY: GateState = GateState::Resync {
    boundary_owed: false,
    dropping: false,
};

/// Pushes frames into the bounded queue with `try_send` only.
pub(crate) struct Gate {
    out: mpsc::Sender<IngestItem>,
    stats: Arc<ChannelStats>,
    channel: u32,
    camera: Arc<str>,
    state: GateState,
    /// Frames dropped in the current overflow gap, for the log line when delivery resumes.
    gap_frames: u64,
    overflow_log: RateLimit,
}

impl Gate {
    pub(crate) fn new(
        out: mpsc::Sender<IngestItem>,
        stats: Arc<ChannelStats>,
        channel: u32,
        camera: Arc<str>,
    ) -> Self {
        Gate {
            out,
            stats,
            channel,
            camera,
            state: AT_BOUNDARY,
            gap_frames: 0,
            overflow_log: RateLimit::new(Duration::from_secs(10)),
        }
    }

    /// Tells the consumer something that is not a frame, if the queue has room (best effort:
    /// a full queue is already losing frames, and says so).
    pub(crate) fn notify(&mut self, item: IngestItem) -> Result<(), ConsumerGone> {
        match self.out.try_send(item) {
            Err(TrySendError::Closed(_)) => Err(ConsumerGone),
            _ => Ok(()),
        }
    }

    /// Offers a frame to the consumer; drops it (and counts it) if it cannot be delivered now.
    pub(crate) fn push(&mut self, frame: Frame) -> Result<(), ConsumerGone> {
        match self.state {
            GateState::Streaming => match self.out.try_send(IngestItem::Frame(frame)) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(_)) => {
                    self.drop_frame(true, false);
                    self.state = GateState::Resync {
                        boundary_owed: true,
                        dropping: true,
                    };
                    Ok(())
                }
                Err(TrySendError::Closed(_)) => Err(ConsumerGone),
            },
            GateState::Resync {
                boundary_owed,
                dropping,
            } => {
                if !frame.key {
                    self.drop_frame(!dropping, dropping);
                    self.state = GateState::Resync {
                        boundary_owed,
                        dropping: true,
                    };
                    return Ok(());
                }
                // The boundary and the key frame go in together or not at all, so the consumer
                // never sees a key frame continue a run it should have closed. (A queue of
                // capacity 1 cannot hold both; it gets the key frame alone.)
                let send_boundary = boundary_owed && self.out.max_capacity() >= 2;
                let need = if send_boundary { 2 } else { 1 };
                let delivered = match self.out.try_reserve_many(need) {
                    Ok(mut permits) => {
                        if send_boundary {
                            if let Some(p) = permits.next() {
                                p.send(IngestItem::SessionEnded);
                            }
                        }
                        if let Some(p) = permits.next() {
                            p.send(IngestItem::Frame(frame));
                        }
                        true
                    }
                    Err(TrySendError::Full(())) => false,
                    Err(TrySendError::Closed(())) => return Err(ConsumerGone),
                };
                if delivered {
                    if dropping {
                        debug!(
                            channel = self.channel,
                            camera = %self.camera,
                            dropped_frames = self.gap_frames,
                            "ingest queue has room again; resuming at a key frame"
                        );
                    }
                    self.gap_frames = 0;
                    self.state = GateState::Streaming;
                } else {
                    // A key frame that does not fit starts another dropped GOP.
                    self.drop_frame(true, dropping);
                    self.state = GateState::Resync {
                        boundary_owed,
                        dropping: true,
                    };
                }
                Ok(())
            }
        }
    }

    /// Offers an audio frame: delivered only while the video run is being delivered (never
    /// opens a run), dropped when the queue is full.
    pub(crate) fn push_audio(&mut self, audio: crate::audio::AudioFrame) -> Result<(), ConsumerGone> {
        if self.state != GateState::Streaming {
            return Ok(());
        }
        match self.out.try_send(IngestItem::Audio(audio)) {
            Ok(()) | Err(TrySendError::Full(_)) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(ConsumerGone),
        }
    }

    /// The run of frames is over (session ended or stopping): tell the consumer if it has frames
    /// of this run, now if there is room, otherwise just before the next frame.
    pub(crate) fn end_run(&mut self) {
        let owed = match self.state {
            GateState::Streaming => true,
            GateState::Resync { boundary_owed, .. } => boundary_owed,
        };
        self.gap_frames = 0;
        self.state = if owed && self.out.try_send(IngestItem::SessionEnded).is_err() {
            // Full (or closed, in which case nothing will be sent anyway).
            GateState::Resync {
                boundary_owed: true,
                dropping: false,
            }
        } else {
            AT_BOUNDARY
        };
    }

    /// Counts a dropped frame; `new_gop`: it starts a dropped GOP; `in_gap`: frames were already
    /// being dropped (the gap was logged when it began).
    fn drop_frame(&mut self, new_gop: bool, in_gap: bool) {
        self.stats.add_dropped_frame();
        self.gap_frames += 1;
        if new_gop {
            self.stats.add_dropped_gop();
        }
        if in_gap {
            return;
        }
        if let Some(suppressed) = self.overflow_log.allow() {
            warn!(
                channel = self.channel,
                camera = %self.camera,
                capacity = self.out.max_capacity(),
                dropped_gops = self.stats.snapshot().dropped_gops,
                suppressed,
                "ingest queue full (consumer too slow); dropping frames until the next key frame"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(time_90k: i64, key: bool) -> Frame {
        Frame::for_test(time_90k, key)
    }

    fn gate(cap: usize) -> (Gate, mpsc::Receiver<IngestItem>, Arc<ChannelStats>) {
        let (tx, rx) = mpsc::channel(cap);
        let stats = Arc::new(ChannelStats::new(1, "test".into()));
        (Gate::new(tx, stats.clone(), 1, "test".into()), rx, stats)
    }

    /// Drains the queue into a compact description: K key frame, P other frame, E SessionEnded.
    fn drain(rx: &mut mpsc::Receiver<IngestItem>) -> String {
        let mut s = String::new();
        while let Ok(item) = rx.try_recv() {
            s.push(match item {
                IngestItem::Frame(f) if f.key => 'K',
                IngestItem::Frame(_) => 'P',
                IngestItem::Audio(_) => 'A',
                IngestItem::SessionEnded => 'E',
                IngestItem::Reanchored { .. } => 'R',
            });
        }
        s
    }

    #[test]
    fn overflow_drops_until_a_key_frame_fits_with_its_boundary() {
        let (mut g, mut rx, stats) = gate(3);
        for (i, key) in [true, false, false, false, false, true]
            .into_iter()
            .enumerate()
        {
            g.push(frame(i as i64, key)).unwrap();
        }
        assert_eq!(drain(&mut rx), "KPP");
        g.push(frame(6, false)).unwrap();
        g.push(frame(7, true)).unwrap();
        g.push(frame(8, false)).unwrap();
        assert_eq!(drain(&mut rx), "EKP");
        let s = stats.snapshot();
        // Two GOPs touched: the first (from frame 3) and the one starting at key frame 5.
        assert_eq!((s.dropped_gops, s.dropped_frames), (2, 4));
    }

    #[test]
    fn key_frame_waits_until_boundary_also_fits() {
        let (mut g, mut rx, stats) = gate(3);
        for key in [true, false, false, false] {
            g.push(frame(0, key)).unwrap();
        }
        let _ = rx.try_recv(); // one free slot: not enough for SessionEnded + key
        g.push(frame(1, true)).unwrap();
        assert_eq!(drain(&mut rx), "PP");
        g.push(frame(2, true)).unwrap();
        assert_eq!(drain(&mut rx), "EK");
        assert_eq!(stats.snapshot().dropped_gops, 2);
    }

    #[test]
    fn end_run_defers_boundary_when_full_and_skips_it_when_nothing_was_sent() {
        let (mut g, mut rx, _) = gate(2);
        g.end_run();
        assert_eq!(drain(&mut rx), "");
        g.push(frame(0, true)).unwrap();
        g.push(frame(1, false)).unwrap();
        g.end_run(); // queue full: boundary owed
        assert_eq!(drain(&mut rx), "KP");
        g.end_run(); // still owed, now there is room
        assert_eq!(drain(&mut rx), "E");
        g.push(frame(2, true)).unwrap();
        g.end_run(); // room for the boundary right away
        assert_eq!(drain(&mut rx), "KE");
        g.push(frame(3, true)).unwrap();
        g.push(frame(4, false)).unwrap();
        g.end_run(); // full again: owed, delivered with the next key frame
        assert_eq!(drain(&mut rx), "KP");
        g.push(frame(5, true)).unwrap();
        assert_eq!(drain(&mut rx), "EK");
    }

    #[test]
    fn closed_queue_is_reported() {
        let (mut g, rx, _) = gate(2);
        drop(rx);
        assert_eq!(g.push(frame(0, true)), Err(ConsumerGone));
    }

    #[test]
    fn audio_goes_only_with_a_delivered_run() {
        let (mut g, mut rx, _) = gate(3);
        let audio = || crate::audio::AudioFrame {
            time_90k: 0,
            samples: 1024,
            data: Bytes::from_static(b"a"),
        };
        g.push_audio(audio()).unwrap(); // no run yet: dropped
        g.push(frame(0, true)).unwrap();
        g.push_audio(audio()).unwrap();
        g.push_audio(audio()).unwrap();
        g.push_audio(audio()).unwrap(); // queue full: dropped, video state unchanged
        assert_eq!(drain(&mut rx), "KAA");
        g.push(frame(3600, false)).unwrap();
        assert_eq!(drain(&mut rx), "P");
    }
}

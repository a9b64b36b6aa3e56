//! Placing a camera's RTP presentation times on the wall clock: a run is anchored at its first
//! frame's arrival, then follows slow drift between the camera's clock and ours by slewing at
//! most ±`max_slew_ppm`, and is ended (to be re-anchored) when the two disagree by more than a
//! threshold or RTP time goes backwards.
//!
//! Arrival time is an upper bound on capture time, late by network and encoder delay and by
//! jitter; the slew steers by the least-delayed frame of each second, so jitter does not move
//! stamps and a steady delay is not mistaken for drift.
//!
//! Because arrival bounds capture, in a stream without reordering a frame the mapping would
//! place after its own arrival is placed at its arrival instead and the mapping moves back with
//! it at once: a camera clock running fast (at any rate) or stepping forward by less than the
//! threshold is followed without ending the run, no footage is stamped in the future, and a
//! re-anchored run never starts before the previous one ended (runs overlapped by up to the
//! threshold when a fast clock was only slewed). A reordered (B-frame) stream sends pictures
//! ahead of their presentation time, and moving the mapping at once would put the B-frames
//! that follow before pictures already placed: there a fast clock is slewed and re-anchored as
//! before. A stream counts as reordered once a frame comes with an earlier RTP time than one
//! before it; one whose SPS does not say it never reorders is first watched for
//! [`WATCH_FRAMES`] frames. A slow clock is slewed forward at most `max_slew_ppm` and re-anchored past the
//! threshold, leaving a gap, never an overlap. Pure state machine: callers pass both clocks, so
//! tests drive it with synthetic times.

/// Tunables, 90 kHz units where they are times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimelineConfig {
    /// Largest correction rate, parts per million of media time.
    pub max_slew_ppm: i64,
    /// Disagreement between RTP and wall time (either way) that ends the run.
    pub reanchor_after_90k: i64,
}

impl Default for TimelineConfig {
    fn default() -> Self {
        TimelineConfig {
            max_slew_ppm: 500,
            reanchor_after_90k: 90_000,
        }
    }
}

/// Media time between slew target updates (one second).
const WINDOW_90K: i64 = 90_000;

/// Frames of a run watched for reordering before a stream that may reorder (its SPS does not
/// say otherwise) is treated as one that does not.
const WATCH_FRAMES: u32 = 16;

/// How far after its arrival (beyond the reorder lead) a frame may be placed before the
/// mapping is moved back at once: 2 ms. Smaller differences are the least-delayed frames'
/// jitter, which the slew absorbs without changing any frame's duration noticeably.
const AHEAD_TOLERANCE_90K: i64 = 180;

/// Where a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Presentation time on the wall clock, 90 kHz since the epoch.
    At(i64),
    /// RTP and wall time disagree by `error_90k` (wall minus where RTP time would put the
    /// frame; negative: the camera's time ran ahead): the run must end. The timeline is now
    /// unanchored; the next `place` (at a key frame) anchors a new run.
    Jump { error_90k: i64 },
}

#[derive(Clone, Copy, Debug)]
struct Anchor {
    /// Wall time = RTP time + `offset`.
    offset: i64,
    /// Highest RTP time seen (B-frames arrive with lower ones).
    max_rtp: i64,
    /// RTP time at which the current window began.
    window_start: i64,
    /// Least (wall − mapped) in the current window.
    window_min_err: i64,
    /// Correction still to apply, slewed in frame by frame.
    to_slew: i64,
    /// Slew allowed but not yet used, in millionths of a tick (500 ppm of a 40 ms frame is
    /// 1.8 ticks: whole ticks per frame would slew 1 tick, only 278 ppm).
    slew_credit: i64,
    /// Frames placed in this run (saturating).
    frames: u32,
    /// A frame came with an earlier RTP time than one before it (B-frames).
    reordering_seen: bool,
    /// Where the previous frame went.
    last_placed: i64,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Unanchored,
    Anchored(Anchor),
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Timeline {
    cfg: TimelineConfig,
    state: State,
}

impl Timeline {
    pub(crate) fn new(cfg: TimelineConfig) -> Self {
        Timeline {
            cfg,
            state: State::Unanchored,
        }
    }

    pub(crate) fn is_anchored(&self) -> bool {
        matches!(self.state, State::Anchored(_))
    }

    /// Places a frame with RTP time `rtp_90k` (extended, in 90 kHz units) that arrived at wall
    /// time `wall_90k`. `reorder_90k` is how far behind the highest RTP time seen a frame may
    /// legitimately be (B-frames); further back is a backwards jump. `may_reorder`: the SPS
    /// does not rule out B-frames.
    pub(crate) fn place(
        &mut self,
        rtp_90k: i64,
        wall_90k: i64,
        reorder_90k: i64,
        may_reorder: bool,
    ) -> Placement {
        let a = match &mut self.state {
            State::Unanchored => {
                self.state = State::Anchored(Anchor {
                    offset: wall_90k - rtp_90k,
                    max_rtp: rtp_90k,
                    window_start: rtp_90k,
                    window_min_err: 0,
                    to_slew: 0,
                    slew_credit: 0,
                    frames: 1,
                    reordering_seen: false,
                    last_placed: wall_90k,
                });
                return Placement::At(wall_90k);
            }
            State::Anchored(a) => a,
        };
        let err = wall_90k - (rtp_90k + a.offset);
        if err.abs() > self.cfg.reanchor_after_90k || rtp_90k < a.max_rtp - reorder_90k.max(0) {
            self.state = State::Unanchored;
            return Placement::Jump { error_90k: err };
        }
        a.frames = a.frames.saturating_add(1);
        a.reordering_seen |= rtp_90k < a.max_rtp;
        let in_order = !a.reordering_seen && (!may_reorder || a.frames > WATCH_FRAMES);
        // The bound is also strictly after the previous frame: a sender faster than real time
        // (camsim --fast: thousands of frames a second) gets its frames at their arrival times,
        // however close, in order.
        let bound = (wall_90k + AHEAD_TOLERANCE_90K).max(a.last_placed + 1);
        let excess = if in_order { rtp_90k + a.offset - bound } else { 0 };
        if excess > 0 {
            // Presented after it arrived: impossible, so the camera's clock is ahead. Move the
            // mapping back to the bound now; every error of the window grows by as much.
            a.offset -= excess;
            a.to_slew = 0;
            a.window_min_err = a.window_min_err.saturating_add(excess);
        }
        a.window_min_err = a.window_min_err.min(err + excess.max(0));
        if rtp_90k > a.max_rtp {
            // Slew in what is left of the target, at most max_slew_ppm of the media time
            // that passed.
            let advance = rtp_90k - a.max_rtp;
            a.slew_credit += advance.saturating_mul(self.cfg.max_slew_ppm);
            let limit = a.slew_credit / 1_000_000;
            let step = a.to_slew.clamp(-limit, limit);
            // Only the fraction of a tick carries over: unused slew is not banked into a
            // later burst.
            a.slew_credit = (a.slew_credit - step.abs() * 1_000_000).min(999_999);
            a.offset += step;
            a.to_slew -= step;
            a.window_min_err -= step;
            a.max_rtp = rtp_90k;
            if rtp_90k - a.window_start >= WINDOW_90K {
                // The least-delayed frame of the window says how far off the mapping is.
                a.to_slew = a.window_min_err;
                a.window_start = rtp_90k;
                a.window_min_err = i64::MAX;
            }
        }
        a.last_placed = rtp_90k + a.offset;
        Placement::At(a.last_placed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: i64 = 3600;
    const T0: i64 = 1_790_000_000 * 90_000;

    /// Feeds `n` frames: frame i has RTP time `rtp(i)` and arrives at `wall(i)`; returns the
    /// placements.
    fn feed(
        t: &mut Timeline,
        n: i64,
        rtp: impl Fn(i64) -> i64,
        wall: impl Fn(i64) -> i64,
    ) -> Vec<Placement> {
        (0..n).map(|i| t.place(rtp(i), wall(i), 2 * FRAME, false)).collect()
    }

    fn times(p: &[Placement]) -> Vec<i64> {
        p.iter()
            .map(|p| match p {
                Placement::At(t) => *t,
                Placement::Jump { .. } => panic!("unexpected jump in {p:?}"),
            })
            .collect()
    }

    #[test]
    fn steady_camera_with_jitter_keeps_frame_spacing() {
        let mut t = Timeline::new(TimelineConfig::default());
        // Arrival 20 ms late plus 0–30 ms of jitter.
        let p = feed(&mut t, 1500, |i| 1_000 + i * FRAME, |i| T0 + i * FRAME + 1800 + (i * 7919 % 2700));
        let ts = times(&p);
        assert_eq!(ts[0], T0 + 1800);
        for w in ts.windows(2) {
            let d = w[1] - w[0];
            assert!((FRAME - 2..=FRAME + 2).contains(&d), "duration {d}");
        }
        // Stamps stay within the jitter of arrival time (they follow the least-delayed frames).
        for (i, s) in ts.iter().enumerate() {
            let arrival = T0 + i as i64 * FRAME + 1800 + (i as i64 * 7919 % 2700);
            assert!((arrival - 2700..=arrival + 2700).contains(s), "frame {i}");
        }
    }

    #[test]
    fn slow_clock_within_500_ppm_is_slewed() {
        let mut t = Timeline::new(TimelineConfig::default());
        // The camera's clock runs 300 ppm slow: 25 fps by its clock is 3601.08 ticks of ours.
        let n = 25 * 600; // ten minutes
        let p = feed(&mut t, n, |i| i * FRAME, |i| T0 + i * FRAME * 1_000_300 / 1_000_000);
        let ts = times(&p);
        for (i, s) in ts.iter().enumerate() {
            let wall = T0 + i as i64 * FRAME * 1_000_300 / 1_000_000;
            assert!((s - wall).abs() < 90 * 20, "frame {i}: off by {} ticks", s - wall);
            assert!(*s <= wall + AHEAD_TOLERANCE_90K, "frame {i} stamped {} ticks after it arrived", s - wall);
        }
        for w in ts.windows(2) {
            let d = w[1] - w[0];
            assert!((FRAME - 2..=FRAME + 3).contains(&d), "duration {d}");
        }
    }

    #[test]
    fn slow_clock_beyond_the_slew_reanchors_at_the_threshold() {
        let mut t = Timeline::new(TimelineConfig::default());
        // 2,000 ppm slow: slewing follows 500 ppm, so the error grows 1.5 ms a second and
        // crosses 1 s after 1 / 1,500 ppm = 667 s (slewing slower, e.g. 280 ppm, would be 581 s).
        let wall = |i: i64| T0 + i * FRAME * 1002 / 1000;
        let p = feed(&mut t, 25 * 800, |i| i * FRAME, wall);
        let first = p.iter().position(|p| matches!(p, Placement::Jump { .. }));
        let at_s = first.map(|i| i as f64 / 25.0);
        assert!(at_s.is_some_and(|s| (640.0..700.0).contains(&s)), "first re-anchor at {at_s:?} s");
        for (i, p) in p.iter().enumerate() {
            if let Placement::At(s) = p {
                assert!((0..=90_000).contains(&(wall(i as i64) - s)), "frame {i}");
            }
        }
    }

    #[test]
    fn fast_clock_follows_arrival_and_never_stamps_the_future() {
        let mut t = Timeline::new(TimelineConfig::default());
        // 2,000 ppm fast (and 5 %, far beyond any slew), arrivals 20 ms late plus 0–30 ms of
        // jitter, twenty minutes: no re-anchor, no stamp after its frame's arrival, durations
        // within a few ticks of the camera's shortened frame interval.
        for ppm in [2_000, 50_000] {
            let period = FRAME * (1_000_000 - ppm) / 1_000_000;
            let arrival = |i: i64| T0 + i * period + 1800 + (i * 7919 % 2700);
            let p = feed(&mut t, 25 * 1200, |i| i * FRAME, arrival);
            let ts = times(&p);
            let mut shortest = i64::MAX;
            for (i, s) in ts.iter().enumerate() {
                let a = arrival(i as i64);
                assert!(*s <= a + AHEAD_TOLERANCE_90K, "{ppm} ppm: frame {i} stamped {} ticks after it arrived", s - a);
                assert!(a - s <= 2700 + 1800, "{ppm} ppm: frame {i} stamped {} ticks early", a - s);
            }
            for w in ts.windows(2) {
                shortest = shortest.min(w[1] - w[0]);
                assert!(w[1] - w[0] <= FRAME + 3, "{ppm} ppm: duration {}", w[1] - w[0]);
            }
            assert!(shortest >= period - 2700, "{ppm} ppm: shortest duration {shortest}");
            t = Timeline::new(TimelineConfig::default());
        }
    }

    #[test]
    fn fast_b_frame_stream_keeps_presentation_order() {
        // I P B B P B B … sent in decode order (P three frames ahead), camera 2,000 ppm fast,
        // the SPS not saying whether it reorders: the mapping is slewed, never moved at once,
        // so every picture keeps its place among the others.
        let mut t = Timeline::new(TimelineConfig::default());
        let period = FRAME * 998 / 1000;
        // Frame numbers in decode order: 0, then 3 1 2, 6 4 5, …
        let rtps: Vec<i64> = std::iter::once(0)
            .chain((0..1000).flat_map(|k| [3 * k + 3, 3 * k + 1, 3 * k + 2]))
            .map(|n| n * FRAME)
            .collect();
        let placed: Vec<i64> = rtps
            .iter()
            .enumerate()
            .map(|(i, r)| match t.place(*r, T0 + i as i64 * period + 1800, 3 * FRAME, true) {
                Placement::At(p) => p,
                Placement::Jump { .. } => i64::MIN,
            })
            .collect();
        let mut by_rtp: Vec<(i64, i64)> = rtps.iter().copied().zip(placed.iter().copied()).filter(|p| p.1 != i64::MIN).collect();
        by_rtp.sort_unstable();
        for w in by_rtp.windows(2) {
            assert!(w[1].1 - w[0].1 >= FRAME / 2, "pictures {w:?} out of order or squeezed");
        }
    }

    #[test]
    fn sender_faster_than_real_time_is_placed_at_arrival_in_order() {
        // camsim --fast: 25 fps by RTP time, arriving every 1.5 ticks (60,000 frames a second).
        let mut t = Timeline::new(TimelineConfig::default());
        let arrival = |i: i64| T0 + i * 3 / 2;
        let ts = times(&feed(&mut t, 20_000, |i| i * FRAME, arrival));
        for w in ts.windows(2) {
            assert!(w[1] > w[0], "not strictly increasing: {w:?}");
        }
        for (i, s) in ts.iter().enumerate() {
            assert!(*s <= arrival(i as i64) + AHEAD_TOLERANCE_90K, "frame {i} in the future");
        }
    }

    #[test]
    fn forward_step_below_the_threshold_is_followed_without_a_new_run() {
        let mut t = Timeline::new(TimelineConfig::default());
        let wall = |i: i64| T0 + i * FRAME;
        // RTP time steps 0.5 s forward at frame 50.
        let rtp = |i: i64| i * FRAME + if i >= 50 { 45_000 } else { 0 };
        let ts = times(&feed(&mut t, 100, rtp, wall));
        for (i, s) in ts.iter().enumerate() {
            let late = s - wall(i as i64);
            assert!((0..=AHEAD_TOLERANCE_90K).contains(&late), "frame {i}: {late} ticks after arrival");
        }
        for w in ts.windows(2) {
            assert!((FRAME - 2..=FRAME + AHEAD_TOLERANCE_90K).contains(&(w[1] - w[0])), "duration {}", w[1] - w[0]);
        }
    }

    #[test]
    fn rtp_jumps_end_the_run_and_reanchor_to_wall_time() {
        let mut t = Timeline::new(TimelineConfig::default());
        let wall = |i: i64| T0 + i * FRAME;
        assert_eq!(t.place(0, wall(0), 0, false), Placement::At(T0));
        assert_eq!(t.place(FRAME, wall(1), 0, false), Placement::At(T0 + FRAME));
        // Back by 0.9 s (a server re-base): below the threshold, but backwards.
        let back = 2 * FRAME - 81_000;
        assert!(matches!(t.place(back, wall(2), 2 * FRAME, true), Placement::Jump { .. }));
        assert!(!t.is_anchored());
        assert_eq!(t.place(back, wall(2), 0, false), Placement::At(wall(2)));
        // Forward by an hour.
        let fwd = back + FRAME + 3600 * 90_000;
        match t.place(fwd, wall(3), 0, false) {
            Placement::Jump { error_90k } => assert_eq!(error_90k, -3600 * 90_000),
            p => panic!("{p:?}"),
        }
        assert_eq!(t.place(fwd, wall(3), 0, false), Placement::At(wall(3)));
        assert_eq!(t.place(fwd + FRAME, wall(4), 0, false), Placement::At(wall(4)));
    }

    #[test]
    fn b_frames_within_the_reorder_window_are_not_jumps() {
        let mut t = Timeline::new(TimelineConfig::default());
        let order = [0, 3, 1, 2, 6, 4, 5];
        for (i, f) in order.iter().enumerate() {
            let p = t.place(f * FRAME, T0 + (i as i64 + 1) * FRAME, 2 * FRAME, true);
            assert_eq!(p, Placement::At(T0 + FRAME + f * FRAME));
        }
    }
}

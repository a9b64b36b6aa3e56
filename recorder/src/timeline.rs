//! Placing a camera's RTP presentation times on the wall clock: a run is anchored at its first
//! frame's arrival, then follows slow drift between the camera's clock and ours by slewing at
//! most ±`max_slew_ppm`, and is ended (to be re-anchored) when the two disagree by more than a
//! threshold or RTP time goes backwards.
//!
//! Arrival time is an upper bound on capture time, late by network and encoder delay and by
//! jitter; the slew steers by the least-delayed frame of each second, so jitter does not move
//! stamps and a steady delay is not mistaken for drift. Pure state machine: callers pass both
//! clocks, so tests drive it with synthetic times.

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
    /// legitimately be (B-frames); further back is a backwards jump.
    pub(crate) fn place(&mut self, rtp_90k: i64, wall_90k: i64, reorder_90k: i64) -> Placement {
        let a = match &mut self.state {
            State::Unanchored => {
                self.state = State::Anchored(Anchor {
                    offset: wall_90k - rtp_90k,
                    max_rtp: rtp_90k,
                    window_start: rtp_90k,
                    window_min_err: 0,
                    to_slew: 0,
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
        a.window_min_err = a.window_min_err.min(err);
        if rtp_90k > a.max_rtp {
            // Slew in what is left of the target, at most max_slew_ppm of the media time
            // that passed.
            let advance = rtp_90k - a.max_rtp;
            let limit = advance * self.cfg.max_slew_ppm / 1_000_000;
            let step = a.to_slew.clamp(-limit, limit);
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
        Placement::At(rtp_90k + a.offset)
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
        (0..n).map(|i| t.place(rtp(i), wall(i), 2 * FRAME)).collect()
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
    fn fast_clock_is_slewed_at_most_500_ppm() {
        let mut t = Timeline::new(TimelineConfig::default());
        // The camera's clock runs 300 ppm fast: 25 fps by its clock is 3601.08 ticks of ours.
        let n = 25 * 600; // ten minutes
        let p = feed(&mut t, n, |i| i * FRAME, |i| T0 + i * FRAME * 1_000_300 / 1_000_000);
        let ts = times(&p);
        for (i, s) in ts.iter().enumerate() {
            let wall = T0 + i as i64 * FRAME * 1_000_300 / 1_000_000;
            assert!((s - wall).abs() < 90 * 20, "frame {i}: off by {} ticks", s - wall);
        }
        for w in ts.windows(2) {
            let d = w[1] - w[0];
            assert!((FRAME - 2..=FRAME + 3).contains(&d), "duration {d}");
        }
    }

    #[test]
    fn clock_too_fast_to_slew_reanchors_before_a_second_off() {
        let mut t = Timeline::new(TimelineConfig::default());
        // 2,000 ppm fast: slewing follows 500 ppm, the gap grows by 1.5 ms a second.
        let n = 25 * 1200;
        let wall = |i: i64| T0 + i * FRAME * 998 / 1000;
        let p = feed(&mut t, n, |i| i * FRAME, wall);
        let jumps = p.iter().filter(|p| matches!(p, Placement::Jump { .. })).count();
        assert!((1..=2).contains(&jumps), "{jumps} re-anchors in 20 minutes");
        for (i, p) in p.iter().enumerate() {
            if let Placement::At(s) = p {
                assert!((s - wall(i as i64)).abs() <= 90_000, "frame {i}");
            }
        }
    }

    #[test]
    fn rtp_jumps_end_the_run_and_reanchor_to_wall_time() {
        let mut t = Timeline::new(TimelineConfig::default());
        let wall = |i: i64| T0 + i * FRAME;
        assert_eq!(t.place(0, wall(0), 0), Placement::At(T0));
        assert_eq!(t.place(FRAME, wall(1), 0), Placement::At(T0 + FRAME));
        // Back by 0.9 s (a server re-base): below the threshold, but backwards.
        let back = 2 * FRAME - 81_000;
        assert!(matches!(t.place(back, wall(2), 2 * FRAME), Placement::Jump { .. }));
        assert!(!t.is_anchored());
        assert_eq!(t.place(back, wall(2), 0), Placement::At(wall(2)));
        // Forward by an hour.
        let fwd = back + FRAME + 3600 * 90_000;
        match t.place(fwd, wall(3), 0) {
            Placement::Jump { error_90k } => assert_eq!(error_90k, -3600 * 90_000),
            p => panic!("{p:?}"),
        }
        assert_eq!(t.place(fwd, wall(3), 0), Placement::At(wall(3)));
        assert_eq!(t.place(fwd + FRAME, wall(4), 0), Placement::At(wall(4)));
    }

    #[test]
    fn b_frames_within_the_reorder_window_are_not_jumps() {
        let mut t = Timeline::new(TimelineConfig::default());
        let order = [0, 3, 1, 2, 6, 4, 5];
        for (i, f) in order.iter().enumerate() {
            let p = t.place(f * FRAME, T0 + (i as i64 + 1) * FRAME, 2 * FRAME);
            assert_eq!(p, Placement::At(T0 + FRAME + f * FRAME));
        }
    }
}

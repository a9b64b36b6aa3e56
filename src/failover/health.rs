//! A main recorder's health as seen through its probes: the per-main state machine.
//!
//! It is pure: it takes probe outcomes and the current time and says what changed, so every
//! transition is tested without sleeping or sockets. Channel capacity is not its business: when
//! a main is declared failed, the controller decides between `TakenOver` and `Waiting`.

use std::time::{Duration, SystemTime};

use serde::Serialize;

/// The states exactly as the API shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StateName {
    Ok,
    Suspect,
    TakenOver,
    Waiting,
}

/// One main's state, with what each state needs to decide its next transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Healthy; we stand by.
    Ok,
    /// Failing, but fewer than `fail_after` probes in a row so far.
    Suspect { failures: u32 },
    /// Declared failed and its cameras are being recorded here.
    TakenOver { failed_at: SystemTime, good_streak: u32 },
    /// Declared failed, but its channels are held by another main's takeover.
    Waiting { failed_at: SystemTime, good_streak: u32 },
}

/// What a probe outcome changed, for the controller to act on and to log as an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Nothing an operator needs to hear about.
    None,
    /// First failure after being healthy.
    BecameSuspect,
    /// A suspect main answered again before `fail_after`: a blip.
    BlipCleared { failures: u32 },
    /// `fail_after` failures in a row: the controller must take over or queue it.
    Failed { failed_at: SystemTime },
    /// `recover_after` good probes in a row while taken over or waiting: release and stand by.
    Recovered { failed_at: SystemTime, was_taken_over: bool },
}

/// The thresholds of one main.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    pub fail_after: u32,
    pub recover_after: u32,
}

impl Health {
    pub fn name(&self) -> StateName {
        match self {
            Health::Ok => StateName::Ok,
            Health::Suspect { .. } => StateName::Suspect,
            Health::TakenOver { .. } => StateName::TakenOver,
            Health::Waiting { .. } => StateName::Waiting,
        }
    }

    /// When the main was declared failed, if it is.
    pub fn failed_at(&self) -> Option<SystemTime> {
        match self {
            Health::TakenOver { failed_at, .. } | Health::Waiting { failed_at, .. } => Some(*failed_at),
            _ => None,
        }
    }

    /// State after a restart while this main was failed: one more failed probe re-declares it
    /// failed at once, instead of waiting a full `fail_after` again.
    pub fn resumed(t: Thresholds) -> Health {
        Health::Suspect { failures: t.fail_after.saturating_sub(1) }
    }

    /// Applies one probe outcome.
    pub fn on_probe(&mut self, ok: bool, now: SystemTime, t: Thresholds) -> Transition {
        let (next, transition) = match (self.clone(), ok) {
            (Health::Ok, true) => (Health::Ok, Transition::None),
            (Health::Ok, false) | (Health::Suspect { .. }, false) => {
                let failures = match self {
                    Health::Suspect { failures } => *failures + 1,
                    _ => 1,
                };
                if failures >= t.fail_after {
                    // The controller moves it on to TakenOver or Waiting (see `declare`).
                    (Health::Waiting { failed_at: now, good_streak: 0 }, Transition::Failed { failed_at: now })
                } else if failures == 1 {
                    (Health::Suspect { failures }, Transition::BecameSuspect)
                } else {
                    (Health::Suspect { failures }, Transition::None)
                }
            }
            (Health::Suspect { failures }, true) => (Health::Ok, Transition::BlipCleared { failures }),
            (Health::TakenOver { failed_at, .. }, false) => (Health::TakenOver { failed_at, good_streak: 0 }, Transition::None),
            (Health::Waiting { failed_at, .. }, false) => (Health::Waiting { failed_at, good_streak: 0 }, Transition::None),
            (Health::TakenOver { failed_at, good_streak }, true) | (Health::Waiting { failed_at, good_streak }, true) => {
                let was_taken_over = matches!(self, Health::TakenOver { .. });
                let good_streak = good_streak + 1;
                if good_streak >= t.recover_after {
                    (Health::Ok, Transition::Recovered { failed_at, was_taken_over })
                } else if was_taken_over {
                    (Health::TakenOver { failed_at, good_streak }, Transition::None)
                } else {
                    (Health::Waiting { failed_at, good_streak }, Transition::None)
                }
            }
        };
        *self = next;
        transition
    }

    /// The controller's decision after `Failed`, or when a waiting main gets its channels.
    pub fn declare(&mut self, taken_over: bool) {
        if let Some(failed_at) = self.failed_at() {
            let good_streak = match self {
                Health::TakenOver { good_streak, .. } | Health::Waiting { good_streak, .. } => *good_streak,
                _ => 0,
            };
            *self = if taken_over {
                Health::TakenOver { failed_at, good_streak }
            } else {
                Health::Waiting { failed_at, good_streak }
            };
        }
    }
}

/// The longest from a main failing to its takeover being declared, for `check` to explain:
/// the failure can fall just after a good probe started, so `fail_after` more probes start over
/// `fail_after` probe periods, and the last one may take its whole timeout to fail. A probe
/// period is the interval, or the timeout when that is longer (a probe that outlasts the
/// interval delays the next tick, see `controller::probe_loop`).
pub fn detection_time(interval: Duration, timeout: Duration, fail_after: u32) -> Duration {
    interval.max(timeout) * fail_after + timeout
}

/// The longest outage that can never cause a takeover: probes start at least `interval` apart,
/// so an outage this long holds at most `fail_after - 1` of them (zero when `fail_after` is 1:
/// any failed probe takes over).
pub fn flap_tolerance(interval: Duration, fail_after: u32) -> Duration {
    interval * fail_after.saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds { fail_after: 3, recover_after: 2 };

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    #[test]
    fn takeover_after_fail_after_failures_in_a_row() {
        let mut h = Health::Ok;
        assert_eq!(h.on_probe(false, at(0), T), Transition::BecameSuspect);
        assert_eq!(h.on_probe(false, at(1), T), Transition::None);
        assert_eq!(h.name(), StateName::Suspect);
        assert_eq!(h.on_probe(false, at(2), T), Transition::Failed { failed_at: at(2) });
        h.declare(true);
        assert_eq!(h.name(), StateName::TakenOver);
    }

    #[test]
    fn flapping_never_triggers_a_takeover() {
        let mut h = Health::Ok;
        for i in 0..100 {
            // Two failures, one success, forever: always below fail_after = 3.
            let ok = i % 3 == 2;
            let tr = h.on_probe(ok, at(i), T);
            assert!(!matches!(tr, Transition::Failed { .. }), "probe {i} triggered a takeover");
        }
        assert_ne!(h.name(), StateName::TakenOver);
    }

    #[test]
    fn flapping_during_takeover_needs_recover_after_good_probes_in_a_row() {
        let mut h = Health::TakenOver { failed_at: at(0), good_streak: 0 };
        for i in 0..50 {
            // good, bad, good, bad: never two good in a row.
            assert_eq!(h.on_probe(i % 2 == 0, at(i), T), Transition::None);
            assert_eq!(h.name(), StateName::TakenOver);
        }
        assert_eq!(h.on_probe(true, at(60), T), Transition::None);
        assert_eq!(h.on_probe(true, at(61), T), Transition::Recovered { failed_at: at(0), was_taken_over: true });
        assert_eq!(h, Health::Ok);
    }

    #[test]
    fn waiting_main_that_recovers_leaves_the_queue() {
        let mut h = Health::Ok;
        for i in 0..3 {
            h.on_probe(false, at(i), T);
        }
        h.declare(false);
        assert_eq!(h.name(), StateName::Waiting);
        h.on_probe(true, at(4), T);
        assert_eq!(h.on_probe(true, at(5), T), Transition::Recovered { failed_at: at(2), was_taken_over: false });
    }

    #[test]
    fn detection_time_is_the_worst_case() {
        let ms = Duration::from_millis;
        assert_eq!(detection_time(ms(500), ms(500), 10), ms(5500));
        assert_eq!(detection_time(Duration::from_secs(30), Duration::from_secs(5), 3), Duration::from_secs(95));
        // Probes that outlast the interval space the next ones by their timeout.
        assert_eq!(detection_time(ms(100), ms(1000), 3), ms(4000));
        assert_eq!(flap_tolerance(ms(500), 3), ms(1000));
        assert_eq!(flap_tolerance(ms(500), 1), ms(0));
    }

    #[test]
    fn resumed_state_fails_on_first_bad_probe() {
        let mut h = Health::resumed(T);
        assert_eq!(h.on_probe(false, at(0), T), Transition::Failed { failed_at: at(0) });
        let mut h = Health::resumed(T);
        assert!(matches!(h.on_probe(true, at(0), T), Transition::BlipCleared { .. }));
        assert_eq!(h, Health::Ok);
    }
}

/// Flap safety under a simulated clock: random outage sequences against the real state machine
/// and a model of `controller::probe_loop`, no sleeping.
#[cfg(test)]
mod flaps {
    use super::*;
    use proptest::prelude::*;

    /// One simulated probe configuration.
    #[derive(Clone, Debug)]
    struct Sim {
        interval: u64,
        timeout: u64,
        t: Thresholds,
        /// How long each probe takes, in permille of `timeout`, used round-robin.
        took: Vec<u64>,
    }

    impl Sim {
        /// The longest gap between two probe starts, in ms.
        fn spacing(&self) -> u64 {
            self.interval.max(self.timeout)
        }
        fn detection_ms(&self) -> u64 {
            let d = detection_time(Duration::from_millis(self.interval), Duration::from_millis(self.timeout), self.t.fail_after);
            d.as_millis() as u64
        }
        fn tolerance_ms(&self) -> u64 {
            flap_tolerance(Duration::from_millis(self.interval), self.t.fail_after).as_millis() as u64
        }

        /// Runs the probe loop from 0 to `until` ms against a main that is down during each
        /// half-open `(start, end)` of `outages`: a probe starts every `interval` (later when the
        /// previous one outlasted it, as tokio's `MissedTickBehavior::Delay` does), fails iff the
        /// main is down when it starts, and is reported when it ends, at most `timeout` later.
        /// The controller's answer to `Failed` is a takeover. Returns each transition with its
        /// time in ms.
        fn run(&self, outages: &[(u64, u64)], until: u64) -> Vec<(u64, Transition)> {
            let mut h = Health::Ok;
            let mut out = Vec::new();
            let (mut start, mut n) = (0u64, 0usize);
            while start < until {
                let ok = !outages.iter().any(|&(s, e)| s <= start && start < e);
                let took = self.timeout * self.took[n % self.took.len()] / 1000;
                n += 1;
                let done = start + took;
                let tr = h.on_probe(ok, SystemTime::UNIX_EPOCH + Duration::from_millis(done), self.t);
                if matches!(tr, Transition::Failed { .. }) {
                    h.declare(true);
                }
                if !matches!(tr, Transition::None | Transition::BecameSuspect) {
                    out.push((done, tr));
                }
                start = (start + self.interval).max(done);
            }
            out
        }
    }

    fn sim() -> impl Strategy<Value = Sim> {
        (100u64..=5_000, 1u64..=10_000, 2u32..=10, 1u32..=5, proptest::collection::vec(0u64..=1000, 1..32)).prop_map(
            |(interval, timeout, fail_after, recover_after, took)| Sim {
                interval, timeout, t: Thresholds { fail_after, recover_after }, took,
            },
        )
    }

    /// Alternating up and down periods from `(up, down)` pairs; returns the outages and the end.
    fn outages(periods: &[(u64, u64)], tail: u64) -> (Vec<(u64, u64)>, u64) {
        let mut t = 0;
        let mut v = Vec::new();
        for &(up, down) in periods {
            t += up;
            v.push((t, t + down));
            t += down;
        }
        (v, t + tail)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        /// Outages no longer than the flap tolerance, each followed by enough uptime for one
        /// probe to see the main answer, never cause a takeover.
        #[test]
        fn flaps_shorter_than_the_failure_window_never_take_over(
            (s, periods) in sim().prop_flat_map(|s| {
                let (up, tol) = (s.spacing(), s.tolerance_ms());
                let periods = proptest::collection::vec((up..=up * 3, 1..=tol), 1..40);
                (Just(s), periods)
            })
        ) {
            let (outages, until) = outages(&periods, s.spacing());
            let trs = s.run(&outages, until);
            let failed: Vec<_> = trs.iter().filter(|(_, t)| matches!(t, Transition::Failed { .. })).collect();
            prop_assert!(failed.is_empty(), "took over at {failed:?} for outages {outages:?}");
        }

        /// Outages of at least `fail_after` probe periods, each followed by enough uptime for
        /// `recover_after` good probes, cause exactly one takeover each, declared within the
        /// detection time of the outage's start, and one return to standby each.
        #[test]
        fn outages_longer_than_the_failure_window_take_over_exactly_once(
            (s, periods) in sim().prop_flat_map(|s| {
                let (p, f, r) = (s.spacing(), u64::from(s.t.fail_after), u64::from(s.t.recover_after));
                let periods = proptest::collection::vec((r * p..=r * p * 3, f * p..=f * p * 4), 1..8);
                (Just(s), periods)
            })
        ) {
            let r = u64::from(s.t.recover_after) * s.spacing();
            let (outages, until) = outages(&periods, r);
            let trs = s.run(&outages, until);
            let failed: Vec<u64> = trs.iter().filter(|(_, t)| matches!(t, Transition::Failed { .. })).map(|x| x.0).collect();
            let recovered = trs.iter().filter(|(_, t)| matches!(t, Transition::Recovered { was_taken_over: true, .. })).count();
            prop_assert_eq!(failed.len(), outages.len(), "takeovers at {:?} for outages {:?}", failed, outages);
            prop_assert_eq!(recovered, outages.len());
            for (&at, &(start, _)) in failed.iter().zip(&outages) {
                prop_assert!(at >= start && at - start <= s.detection_ms(),
                    "declared at {} for an outage from {}: beyond the detection time {} ms", at, start, s.detection_ms());
            }
        }
    }
}

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
/// the failure can fall just after a good probe, so `fail_after` more probes start over
/// `fail_after` intervals, and the last one may take its whole timeout to fail.
pub fn detection_time(interval: Duration, timeout: Duration, fail_after: u32) -> Duration {
    interval * fail_after + timeout
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

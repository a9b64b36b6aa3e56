//! A volume's health as a small state machine driven by IO errors and successes.
//!
//! Healthy --error--> Suspect --error--> Unhealthy --(RETRY_AFTER)--> Suspect (probation)
//! Suspect --(successes for CLEAR_AFTER without error)--> Healthy.

use std::time::{Duration, Instant};

/// How long an unhealthy volume is avoided before it is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(300);
/// How long a suspect volume must work before it is trusted again.
pub const CLEAR_AFTER: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// One recent error; still used.
    Suspect {
        since: Instant,
    },
    /// Repeated errors; new segments avoid it while another volume is usable.
    Unhealthy {
        since: Instant,
    },
}

impl Health {
    /// The state after an IO error.
    pub fn on_error(self, now: Instant) -> Health {
        match self {
            Health::Healthy => Health::Suspect { since: now },
            Health::Suspect { .. } | Health::Unhealthy { .. } => Health::Unhealthy { since: now },
        }
    }

    /// The state after a successful write/sync.
    pub fn on_success(self, now: Instant) -> Health {
        match self {
            Health::Suspect { since } if now.duration_since(since) >= CLEAR_AFTER => {
                Health::Healthy
            }
            other => other,
        }
    }

    /// The state with time's passing applied (unhealthy volumes get another chance).
    pub fn aged(self, now: Instant) -> Health {
        match self {
            Health::Unhealthy { since } if now.duration_since(since) >= RETRY_AFTER => {
                Health::Suspect { since: now }
            }
            other => other,
        }
    }

    pub fn usable(self) -> bool {
        !matches!(self, Health::Unhealthy { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        let t0 = Instant::now();
        let h = Health::Healthy.on_error(t0);
        assert!(matches!(h, Health::Suspect { .. }) && h.usable());
        assert_eq!(h.on_success(t0 + Duration::from_secs(1)), h);
        assert_eq!(h.on_success(t0 + CLEAR_AFTER), Health::Healthy);
        let u = h.on_error(t0 + Duration::from_secs(2));
        assert!(!u.usable());
        assert!(!u.aged(t0 + Duration::from_secs(3)).usable());
        assert!(u.aged(t0 + Duration::from_secs(2) + RETRY_AFTER).usable());
    }
}

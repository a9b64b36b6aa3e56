//! Reconnect delays: [`Backoff`] settings (exponential with jitter) and the per-channel
//! [`BackoffState`] that walks them.

use std::time::Duration;

use rand::Rng;

/// Exponential reconnect backoff settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Upper bound on the (un-jittered) delay; also used after configuration-like errors.
    pub max: Duration,
    /// Relative jitter applied to each delay, e.g. `0.2` for ±20%. Clamped to `0.0..=1.0`.
    pub jitter: f64,
    /// A session that recorded at least this long resets the delay to `initial`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            jitter: 0.2,
            reset_after: Duration::from_secs(30),
        }
    }
}

/// Where a channel is in its backoff sequence.
#[derive(Debug)]
pub(crate) struct BackoffState {
    settings: Backoff,
    /// Un-jittered delay to use next.
    next: Duration,
}

impl BackoffState {
    pub(crate) fn new(settings: Backoff) -> Self {
        let next = settings.initial.min(settings.max);
        BackoffState { settings, next }
    }

    /// Returns the delay to wait now and doubles the next one (up to `max`).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = base.saturating_mul(2).min(self.settings.max);
        self.jittered(base)
    }

    /// The longest delay (jittered), for errors that retrying soon will not fix; the sequence
    /// continues from `max` afterwards.
    pub(crate) fn max_delay(&mut self) -> Duration {
        self.next = self.settings.max;
        self.jittered(self.settings.max)
    }

    /// Called when a session ends: resets the sequence if it recorded long enough.
    pub(crate) fn session_ended(&mut self, recorded: Duration) {
        if recorded >= self.settings.reset_after {
            self.next = self.settings.initial.min(self.settings.max);
        }
    }

    fn jittered(&self, base: Duration) -> Duration {
        let jitter = if self.settings.jitter.is_finite() {
            self.settings.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        if jitter == 0.0 || base.is_zero() {
            return base;
        }
        let factor = rand::rng().random_range((1.0 - jitter)..=(1.0 + jitter));
        base.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(d: Duration, base_ms: u64) -> bool {
        let ms = d.as_secs_f64() * 1000.0;
        ms >= base_ms as f64 * 0.8 - 1e-6 && ms <= base_ms as f64 * 1.2 + 1e-6
    }

    #[test]
    fn grows_caps_and_resets() {
        let mut b = BackoffState::new(Backoff::default());
        let expected = [1000, 2000, 4000, 8000, 16000, 30000, 30000];
        for ms in expected {
            let d = b.next_delay();
            assert!(within(d, ms), "{d:?} not within 20% of {ms} ms");
        }
        b.session_ended(Duration::from_secs(29));
        assert!(within(b.next_delay(), 30000));
        b.session_ended(Duration::from_secs(30));
        assert!(within(b.next_delay(), 1000));
        assert!(within(b.max_delay(), 30000));
        assert!(within(b.next_delay(), 30000));
    }

    #[test]
    fn jitter_varies_and_can_be_disabled() {
        let mut b = BackoffState::new(Backoff::default());
        let delays: Vec<_> = (0..20).map(|_| b.max_delay()).collect();
        assert!(
            delays.iter().any(|d| *d != delays[0]),
            "no jitter: {delays:?}"
        );

        let mut b = BackoffState::new(Backoff {
            jitter: 0.0,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(250),
            ..Backoff::default()
        });
        let got: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [100, 200, 250, 250]);
    }
}

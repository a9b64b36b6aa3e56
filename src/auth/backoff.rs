//! Login back-off: failures per (client address, user name) lock further attempts for a time
//! that doubles with each failure past the first few; a success clears the count. An attempt
//! is reserved under the lock before its password is checked, so parallel attempts cannot all
//! pass the check before the first failure is counted: at most the free failures left (at
//! least one) are in flight at once per address and user.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failures allowed before attempts are locked out.
const FREE_FAILURES: u32 = 5;
/// The longest lock-out.
const MAX_LOCK: Duration = Duration::from_secs(15 * 60);
/// Entries idle this long are forgotten.
const FORGET: Duration = Duration::from_secs(3600);
/// What an attempt beyond those allowed in flight is told to wait.
const BUSY_WAIT: Duration = Duration::from_secs(1);

struct Record {
    failures: u32,
    /// Attempts reserved and not yet decided.
    pending: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

type Key = (IpAddr, String);

#[derive(Default)]
pub struct Backoff {
    map: Mutex<HashMap<Key, Record>>,
}

/// A login attempt allowed to check its password. Say how it went with [`Attempt::failed`]
/// or [`Attempt::succeeded`]; dropped undecided (a database error), it frees its place.
pub struct Attempt {
    backoff: Arc<Backoff>,
    key: Key,
}

impl Backoff {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Record>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves an attempt for (ip, user); Err(how long to wait) while locked out or while
    /// as many attempts as the free failures left are already being checked.
    pub fn begin(self: &Arc<Self>, ip: IpAddr, user: &str) -> Result<Attempt, Duration> {
        let now = Instant::now();
        let key = (ip, user.to_owned());
        let mut map = self.lock();
        map.retain(|_, r| r.pending > 0 || now.duration_since(r.last) < FORGET);
        let r = map.entry(key.clone()).or_insert(Record { failures: 0, pending: 0, locked_until: None, last: now });
        if let Some(wait) = r.locked_until.and_then(|u| u.checked_duration_since(now)).filter(|d| !d.is_zero()) {
            return Err(wait);
        }
        if r.pending >= FREE_FAILURES.saturating_sub(r.failures).max(1) {
            return Err(BUSY_WAIT);
        }
        r.pending += 1;
        r.last = now;
        Ok(Attempt { backoff: self.clone(), key })
    }
}

impl Attempt {
    pub fn failed(self) {
        let now = Instant::now();
        let mut map = self.backoff.lock();
        let r = map.entry(self.key.clone()).or_insert(Record { failures: 0, pending: 1, locked_until: None, last: now });
        r.failures += 1;
        r.last = now;
        if r.failures >= FREE_FAILURES {
            let secs = 1u64 << (r.failures - FREE_FAILURES + 1).min(10);
            r.locked_until = Some(now + Duration::from_secs(secs).min(MAX_LOCK));
        }
        // Released before `self` drops: its Drop takes the lock to free the place.
        drop(map);
    }

    pub fn succeeded(self) {
        let mut map = self.backoff.lock();
        if let Some(r) = map.get_mut(&self.key) {
            r.failures = 0;
            r.locked_until = None;
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let mut map = self.backoff.lock();
        if let Some(r) = map.get_mut(&self.key) {
            r.pending = r.pending.saturating_sub(1);
            if r.pending == 0 && r.failures == 0 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_failures_per_ip_and_user() {
        let b = Arc::new(Backoff::default());
        let (a, other): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..FREE_FAILURES - 1 {
            b.begin(a, "bob").unwrap().failed();
        }
        b.begin(a, "bob").unwrap().failed();
        assert!(b.begin(a, "bob").err().is_some_and(|d| d <= Duration::from_secs(2)));
        assert!(b.begin(other, "bob").is_ok());
        assert!(b.begin(a, "alice").is_ok());
    }

    #[test]
    fn a_success_clears_the_count() {
        let b = Arc::new(Backoff::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..FREE_FAILURES - 1 {
            b.begin(a, "bob").unwrap().failed();
        }
        b.begin(a, "bob").unwrap().succeeded();
        for _ in 0..FREE_FAILURES - 1 {
            b.begin(a, "bob").unwrap().failed();
        }
        assert!(b.begin(a, "bob").is_ok(), "the count started again after the success");
        assert!(b.lock().is_empty() || b.lock().values().all(|r| r.pending == 0));
    }

    /// Parallel attempts reserve their places under the lock: no more than the free failures
    /// are in flight at once, and an undecided attempt frees its place.
    #[test]
    fn parallel_attempts_are_bounded() {
        let b = Arc::new(Backoff::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<Attempt> = (0..40).filter_map(|_| b.begin(a, "bob").ok()).collect();
        assert_eq!(held.len(), FREE_FAILURES as usize);
        assert_eq!(b.begin(a, "bob").err(), Some(BUSY_WAIT));
        drop(held);
        b.begin(a, "bob").unwrap().failed();
        let held: Vec<Attempt> = (0..40).filter_map(|_| b.begin(a, "bob").ok()).collect();
        assert_eq!(held.len(), FREE_FAILURES as usize - 1, "one failure counted: one place fewer");
        for t in held {
            t.failed();
        }
        assert!(b.begin(a, "bob").is_err(), "locked after the free failures");
    }
}

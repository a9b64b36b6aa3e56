//! Login back-off: failures per (client address, user name) lock further attempts for a time
//! that doubles with each failure past the first few; a success clears the count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before attempts are locked out.
const FREE_FAILURES: u32 = 5;
/// The longest lock-out.
const MAX_LOCK: Duration = Duration::from_secs(15 * 60);
/// Entries idle this long are forgotten.
const FORGET: Duration = Duration::from_secs(3600);

struct Record {
    failures: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

#[derive(Default)]
pub struct Backoff {
    map: Mutex<HashMap<(IpAddr, String), Record>>,
}

impl Backoff {
    /// None if an attempt may go ahead; otherwise how long to wait.
    pub fn wait(&self, ip: IpAddr, user: &str) -> Option<Duration> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let until = map.get(&(ip, user.to_owned()))?.locked_until?;
        until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    pub fn failed(&self, ip: IpAddr, user: &str) {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, r| now.duration_since(r.last) < FORGET);
        let r = map.entry((ip, user.to_owned())).or_insert(Record { failures: 0, locked_until: None, last: now });
        r.failures += 1;
        r.last = now;
        if r.failures >= FREE_FAILURES {
            let secs = 1u64 << (r.failures - FREE_FAILURES + 1).min(10);
            r.locked_until = Some(now + Duration::from_secs(secs).min(MAX_LOCK));
        }
    }

    pub fn succeeded(&self, ip: IpAddr, user: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(&(ip, user.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_failures_per_ip_and_user() {
        let b = Backoff::default();
        let (a, other): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..FREE_FAILURES - 1 {
            b.failed(a, "bob");
            assert_eq!(b.wait(a, "bob"), None);
        }
        b.failed(a, "bob");
        assert!(b.wait(a, "bob").is_some_and(|d| d <= Duration::from_secs(2)));
        assert_eq!(b.wait(other, "bob"), None);
        assert_eq!(b.wait(a, "alice"), None);
        b.succeeded(a, "bob");
        assert_eq!(b.wait(a, "bob"), None);
    }
}

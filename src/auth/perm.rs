//! What a user may do: roles, permissions and channel sets (`1-25,40`).

use std::fmt;

/// One right. A role is a fixed set of them; a token can narrow its user's set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Perm {
    /// Watch live video.
    Live,
    /// List and play back recordings.
    Recordings,
    /// Export footage (downloads, `export`).
    Export,
    /// Read the configuration and camera URLs (never passwords), change mains.
    Config,
    /// Manage users and tokens.
    Users,
    /// Read the audit trail.
    Audit,
    /// Read the Prometheus metrics.
    Metrics,
}

impl Perm {
    pub const ALL: [Perm; 7] = [Perm::Live, Perm::Recordings, Perm::Export, Perm::Config, Perm::Users, Perm::Audit, Perm::Metrics];

    pub fn name(self) -> &'static str {
        match self {
            Perm::Live => "live",
            Perm::Recordings => "recordings",
            Perm::Export => "export",
            Perm::Config => "config",
            Perm::Users => "users",
            Perm::Audit => "audit",
            Perm::Metrics => "metrics",
        }
    }
}

/// A user's role: `admin` (everything), `operator` (video, export, config, metrics),
/// `viewer` (live and recordings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "viewer" => Ok(Role::Viewer),
            _ => Err(format!("role {s:?} is not one of admin, operator, viewer")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }

    pub fn allows(self, p: Perm) -> bool {
        match self {
            Role::Admin => true,
            Role::Operator => matches!(p, Perm::Live | Perm::Recordings | Perm::Export | Perm::Config | Perm::Metrics),
            Role::Viewer => matches!(p, Perm::Live | Perm::Recordings),
        }
    }

    pub fn perms(self) -> Vec<&'static str> {
        Perm::ALL.iter().filter(|p| self.allows(**p)).map(|p| p.name()).collect()
    }
}

/// What a token may do within its (possibly narrowed) role: everything the role allows, or
/// only read the Prometheus metrics (`token create --scope metrics`), for a scraper whose
/// token must open no footage, status or configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    #[default]
    Full,
    Metrics,
}

impl Scope {
    pub fn parse(s: &str) -> Result<Scope, String> {
        match s {
            "metrics" => Ok(Scope::Metrics),
            _ => Err(format!("scope {s:?} is not known: the only scope is `metrics` (leave it out for the role's full rights)")),
        }
    }

    /// The stored name; None for the full rights.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Scope::Full => None,
            Scope::Metrics => Some("metrics"),
        }
    }

    /// Whether a token of `role` with this scope would have any right at all.
    pub fn usable_by(self, role: Role) -> bool {
        Perm::ALL.iter().any(|p| self.allows(*p) && role.allows(*p))
    }

    pub fn allows(self, p: Perm) -> bool {
        match self {
            Scope::Full => true,
            Scope::Metrics => p == Perm::Metrics,
        }
    }
}

/// A set of channels: every channel, or a list of inclusive ranges written `1-25,40`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Channels {
    All,
    Ranges(Vec<(u32, u32)>),
}

impl Channels {
    /// Parses `all`, or `1-4,7` (ranges and single channels, comma separated).
    pub fn parse(s: &str) -> Result<Channels, String> {
        let s = s.trim();
        if s.is_empty() || s == "all" {
            return Ok(Channels::All);
        }
        let mut v = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let num = |x: &str| x.trim().parse::<u32>().ok().filter(|n| *n > 0);
            let r = match part.split_once('-') {
                Some((a, b)) => num(a).zip(num(b)),
                None => num(part).map(|n| (n, n)),
            };
            match r {
                Some((a, b)) if a <= b => v.push((a, b)),
                _ => return Err(format!("channels: {part:?} is not a channel or a range like 1-4 (in {s:?})")),
            }
        }
        v.sort();
        Ok(Channels::Ranges(v))
    }

    pub fn contains(&self, ch: u32) -> bool {
        match self {
            Channels::All => true,
            Channels::Ranges(v) => v.iter().any(|&(a, b)| (a..=b).contains(&ch)),
        }
    }

    /// Whether every channel of this set is in `of`.
    pub fn is_subset(&self, of: &Channels) -> bool {
        let (Channels::Ranges(mine), Channels::Ranges(theirs)) = (self, of) else {
            return matches!(of, Channels::All);
        };
        mine.iter().all(|&(a, b)| {
            // Walk from a to b through `theirs` (sorted), each step a range holding `next`.
            let mut next = u64::from(a);
            while next <= u64::from(b) {
                match theirs.iter().find(|&&(c, d)| u64::from(c) <= next && next <= u64::from(d)) {
                    Some(&(_, d)) => next = u64::from(d) + 1,
                    None => return false,
                }
            }
            true
        })
    }

    /// The channels in both sets.
    pub fn intersect(&self, other: &Channels) -> Channels {
        match (self, other) {
            (Channels::All, o) | (o, Channels::All) => o.clone(),
            (Channels::Ranges(a), Channels::Ranges(b)) => {
                let mut v = Vec::new();
                for &(a0, a1) in a {
                    for &(b0, b1) in b {
                        let (lo, hi) = (a0.max(b0), a1.min(b1));
                        if lo <= hi {
                            v.push((lo, hi));
                        }
                    }
                }
                v.sort();
                Channels::Ranges(v)
            }
        }
    }
}

impl fmt::Display for Channels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Channels::All => f.write_str("all"),
            Channels::Ranges(v) => {
                let parts: Vec<String> = v.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_sets() {
        let c = Channels::parse("1-4, 7").unwrap();
        assert!(c.contains(1) && c.contains(4) && c.contains(7));
        assert!(!c.contains(5) && !c.contains(0));
        assert_eq!(c.to_string(), "1-4,7");
        assert_eq!(Channels::parse("all").unwrap(), Channels::All);
        assert!(Channels::parse("4-1").is_err());
        assert!(Channels::parse("0").is_err());
        assert!(Channels::parse("a").unwrap_err().contains("\"a\""));
        let i = c.intersect(&Channels::parse("3-10").unwrap());
        assert_eq!(i.to_string(), "3-4,7");
        assert_eq!(Channels::All.intersect(&c), c);
    }

    #[test]
    fn channel_subsets() {
        let p = |s: &str| Channels::parse(s).unwrap();
        assert!(p("1-4").is_subset(&p("1-2,3-4")));
        assert!(p("2,7").is_subset(&p("1-4,7")));
        assert!(p("1-4").is_subset(&Channels::All));
        assert!(!Channels::All.is_subset(&p("1-4")));
        assert!(Channels::All.is_subset(&Channels::All));
        assert!(!p("1-5").is_subset(&p("1-4")));
        assert!(!p("1-4").is_subset(&p("1-2,4")));
        assert!(!p("8").is_subset(&p("1-4,7")));
    }

    #[test]
    fn scopes() {
        assert_eq!(Scope::parse("metrics"), Ok(Scope::Metrics));
        assert!(Scope::parse("live").unwrap_err().contains("live"));
        assert!(Scope::Metrics.allows(Perm::Metrics) && !Scope::Metrics.allows(Perm::Live));
        assert!(Perm::ALL.iter().all(|p| Scope::Full.allows(*p)));
    }

    #[test]
    fn roles() {
        assert!(Role::Admin.allows(Perm::Users));
        assert!(!Role::Operator.allows(Perm::Users));
        assert!(Role::Viewer.allows(Perm::Recordings) && !Role::Viewer.allows(Perm::Export));
        assert!(Role::parse("root").unwrap_err().contains("root"));
    }
}

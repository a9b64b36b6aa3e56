//! Recording health of a main: asking it which of its channels it records right now.
//!
//! One check is one request to the main's own status (`understudy://`: `/api/status`, its
//! channels' states and volumes; `hikvision://`: ISAPI `/ISAPI/ContentMgmt/Storage`, its disks).
//! The answer names the main's channels it does not record, with a reason each; a disk failure
//! names them all. A check that cannot be made (no answer, bad answer) is an error, not a
//! verdict: the probe alone decides whether the main is up. The controller counts the verdicts
//! per channel with the same state machine as probes (`health::Health`).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::AUTHORIZATION;

use crate::config::{HealthSource, Main, Secret};
use crate::import::http::Http;
use crate::import::{xml, Credentials};

/// Largest status answer read (a 4096-channel status is well under 4 MiB).
const MAX_ANSWER: usize = 8 << 20;
const STORAGE: &str = "/ISAPI/ContentMgmt/Storage";

/// The main's channels (its own numbering) it does not record, each with why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub not_recording: BTreeMap<u32, String>,
}

/// A ready client for one main's health source.
pub struct Checker {
    source: HealthSource,
    client: Client,
    creds: Option<Credentials>,
    /// The main's channels we stand in for (its numbering).
    channels: Vec<u32>,
}

enum Client {
    Plain(reqwest::Client),
    Digest(Http),
}

impl Checker {
    pub fn new(main: &Main, source: &HealthSource) -> Result<Checker, String> {
        let channels = main.cameras.iter().map(|c| c.source_channel).collect();
        let creds = match (&main.username, &main.password) {
            (Some(u), p) => Some(Credentials { user: u.clone(), password: p.clone().unwrap_or_else(|| Secret::new("")) }),
            _ => None,
        };
        let client = match source {
            HealthSource::Understudy { ca, .. } => {
                // Only the given CA when `health_ca` is set (a self-signed main is not vouched
                // for by public CAs anyway), else the public roots.
                let trust = match ca {
                    Some(path) => crate::config::trust::parse(Some(path), None).map_err(|(_, m)| format!("health_ca: {m}"))?,
                    None => crate::config::TlsTrust::Roots,
                };
                Client::Plain(crate::failover::outbound::http_client(&trust, main.timeout).map_err(|e| format!("health: {e}"))?)
            }
            HealthSource::Hikvision { .. } => Client::Digest(Http::new(main.timeout).map_err(|e| e.to_string())?),
        };
        Ok(Checker { source: source.clone(), client, creds, channels })
    }

    /// Asks the main once, within `timeout`.
    pub async fn check(&self, timeout: Duration) -> Result<Verdict, String> {
        match tokio::time::timeout(timeout, self.check_inner()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no health answer within {timeout:?}")),
        }
    }

    async fn check_inner(&self) -> Result<Verdict, String> {
        match (&self.source, &self.client) {
            (HealthSource::Understudy { base, token, .. }, Client::Plain(c)) => {
                let mut url = base.clone();
                url.set_path("/api/status");
                let mut rb = c.get(url);
                if let Some(t) = token {
                    rb = rb.header(AUTHORIZATION, format!("Bearer {}", t.expose()));
                }
                let resp = rb.send().await.map_err(|e| format!("/api/status: {}", e.without_url()))?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(format!("/api/status: HTTP {status}{}", if status.as_u16() == 401 { " (check health_token_env)" } else { "" }));
                }
                if resp.content_length().is_some_and(|n| n as usize > MAX_ANSWER) {
                    return Err("/api/status: answer too large".to_owned());
                }
                let body = resp.bytes().await.map_err(|e| format!("/api/status: {}", e.without_url()))?;
                let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("/api/status: not JSON ({e})"))?;
                understudy_verdict(&v, &self.channels)
            }
            (HealthSource::Hikvision { base }, Client::Digest(http)) => {
                let mut url = base.clone();
                url.set_path(STORAGE);
                let text = http.get(&url, self.creds.as_ref()).await.map_err(|e| format!("{STORAGE}: {e}"))?;
                hikvision_verdict(&text, &self.channels)
            }
            _ => Err("health client does not match its source".to_owned()),
        }
    }
}

/// Reads an Understudy `/api/status` answer: a channel is recorded when it is listed with state
/// `recording`; when no volume is usable, nothing is.
pub fn understudy_verdict(v: &serde_json::Value, channels: &[u32]) -> Result<Verdict, String> {
    let listed = v["channels"].as_array().ok_or("/api/status: no \"channels\" list")?;
    let mut states: BTreeMap<u32, (String, Option<String>)> = BTreeMap::new();
    for (i, c) in listed.iter().enumerate() {
        let ch = c["channel"].as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| format!("/api/status: channels[{i}] has no channel number"))?;
        let state = c["state"].as_str().ok_or_else(|| format!("/api/status: channel {ch} has no state"))?;
        states.insert(ch, (state.to_owned(), c["reason"].as_str().map(str::to_owned)));
    }
    let mut out = Verdict::default();
    if let Some(vols) = v["server"]["volumes"].as_array().filter(|v| !v.is_empty()) {
        let usable = vols.iter().any(|v| v["healthy"] == true && v["missing"] != true && v["full"] != true);
        if !usable {
            let why: Vec<String> = vols
                .iter()
                .map(|v| {
                    let path = v["path"].as_str().unwrap_or("?");
                    let what = v["error"].as_str().map(str::to_owned).unwrap_or_else(|| {
                        if v["missing"] == true { "missing".into() } else if v["full"] == true { "full".into() } else { "unhealthy".into() }
                    });
                    format!("{path}: {what}")
                })
                .collect();
            let reason = format!("no usable volume on the main ({})", why.join("; "));
            for ch in channels {
                out.not_recording.insert(*ch, reason.clone());
            }
            return Ok(out);
        }
    }
    for ch in channels {
        match states.get(ch) {
            Some((s, _)) if s == "recording" => {}
            Some((s, reason)) => {
                let r = match reason {
                    Some(r) => format!("the main's channel {ch} is {s}: {r}"),
                    None => format!("the main's channel {ch} is {s}"),
                };
                out.not_recording.insert(*ch, r);
            }
            None => {
                out.not_recording.insert(*ch, format!("the main's status does not list channel {ch}"));
            }
        }
    }
    Ok(out)
}

/// HDD states of ISAPI `hdd/status` (and `nas/status`) in which the disk records.
const DISK_OK: [&str; 3] = ["ok", "idle", "sleeping"];

/// Reads a Hikvision ISAPI `storage` answer (`hddList`/`nasList`): when no disk is in a
/// recording state, every channel is failed with the disks' states as the reason.
pub fn hikvision_verdict(text: &str, channels: &[u32]) -> Result<Verdict, String> {
    let doc = xml::parse(text).map_err(|e| format!("{STORAGE}: {e}"))?;
    if doc.name != "storage" {
        return Err(format!("{STORAGE}: expected <storage>, got <{}>", doc.name));
    }
    let mut disks = Vec::new();
    doc.find_all("hdd", &mut disks);
    doc.find_all("nas", &mut disks);
    let mut states = Vec::new();
    for (i, d) in disks.iter().enumerate() {
        let id = d.text_at(&["id"]).unwrap_or("?");
        let status = d.text_at(&["status"]).ok_or_else(|| format!("{STORAGE}: {}[{i}] (id {id}) has no <status>", d.name))?;
        states.push((format!("{} {id}", d.name), status.to_owned()));
    }
    let mut out = Verdict::default();
    if !states.iter().any(|(_, s)| DISK_OK.contains(&s.as_str())) {
        let reason = if states.is_empty() {
            "the main reports no disk".to_owned()
        } else {
            let list: Vec<String> = states.iter().map(|(d, s)| format!("{d}: {s}")).collect();
            format!("no recording disk on the main ({})", list.join(", "))
        };
        for ch in channels {
            out.not_recording.insert(*ch, reason.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn understudy_channels_not_recording_are_named() {
        let v = json!({
            "server": { "volumes": [{ "path": "/d1", "healthy": true, "missing": false, "full": false }] },
            "channels": [
                { "channel": 1, "state": "recording" },
                { "channel": 2, "state": "backoff", "reason": "connection refused" },
                { "channel": 3, "state": "idle" },
            ],
        });
        let got = understudy_verdict(&v, &[1, 2, 3, 4]).unwrap();
        assert_eq!(got.not_recording.keys().copied().collect::<Vec<_>>(), vec![2, 3, 4]);
        assert!(got.not_recording[&2].contains("backoff: connection refused"), "{got:?}");
        assert!(got.not_recording[&4].contains("does not list"), "{got:?}");
    }

    #[test]
    fn understudy_without_a_usable_volume_records_nothing() {
        let v = json!({
            "server": { "volumes": [{ "path": "/d1", "healthy": false, "error": "I/O error" }, { "path": "/d2", "healthy": true, "full": true }] },
            "channels": [{ "channel": 1, "state": "recording" }],
        });
        let got = understudy_verdict(&v, &[1]).unwrap();
        assert!(got.not_recording[&1].contains("/d1: I/O error; /d2: full"), "{got:?}");
        assert!(understudy_verdict(&json!({ "server": {} }), &[1]).unwrap_err().contains("channels"));
    }

    #[test]
    fn hikvision_disk_states() {
        let doc = |a: &str, b: &str| format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><storage version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema"><hddList>
            <hdd><id>1</id><hddName>hdd1</hddName><status>{a}</status></hdd><hdd><id>2</id><status>{b}</status></hdd></hddList></storage>"#);
        assert!(hikvision_verdict(&doc("ok", "error"), &[1, 2]).unwrap().not_recording.is_empty());
        assert!(hikvision_verdict(&doc("sleeping", "unformatted"), &[1]).unwrap().not_recording.is_empty());
        let bad = hikvision_verdict(&doc("error", "smartFailed"), &[1, 2]).unwrap();
        assert_eq!(bad.not_recording.len(), 2);
        assert!(bad.not_recording[&1].contains("hdd 1: error, hdd 2: smartFailed"), "{bad:?}");
        assert!(hikvision_verdict("<storage><hddList/></storage>", &[1]).unwrap().not_recording[&1].contains("no disk"));
        assert!(hikvision_verdict("<storage><hddList><hdd><id>1</id></hdd>", &[1]).is_err());
        assert!(hikvision_verdict("<storage><hddList><hdd><id>1</id></hdd></hddList></storage>", &[1]).unwrap_err().contains("no <status>"));
    }
}

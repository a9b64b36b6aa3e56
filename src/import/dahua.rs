//! Dahua NVRs and their rebrands: `GET /cgi-bin/configManager.cgi?action=getConfig&name=RemoteDevice`
//! (Dahua "HTTP API for IPC & NVR", config RemoteDevice), HTTP Digest. The answer is
//! `table.RemoteDevice.<device>.<field>=<value>` lines; the device key ends with the channel
//! index (0-based). Newer firmware masks the password as `******`.

use std::collections::BTreeMap;

use super::http::Http;
use super::{Credentials, Listed};
use crate::config::Secret;

const PATH: &str = "/cgi-bin/configManager.cgi";
const PREFIX: &str = "table.RemoteDevice.";

pub async fn list(http: &Http, base: &url::Url, creds: Option<&Credentials>) -> Result<Vec<Listed>, String> {
    let mut url = base.clone();
    url.set_path(PATH);
    url.set_query(Some("action=getConfig&name=RemoteDevice"));
    let text = http.get(&url, creds).await.map_err(|e| format!("RemoteDevice: {e}"))?;
    parse(&text)
}

pub fn parse(text: &str) -> Result<Vec<Listed>, String> {
    let mut devices: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some(rest) = line.strip_prefix(PREFIX) else {
            return Err(format!("RemoteDevice line {}: expected `{PREFIX}…=…`, got {:?}", n + 1, line.chars().take(60).collect::<String>()));
        };
        let (key, value) = rest.split_once('=').ok_or_else(|| format!("RemoteDevice line {}: no `=` (truncated answer?)", n + 1))?;
        let (dev, field) = key.split_once('.').ok_or_else(|| format!("RemoteDevice line {}: no field after the device key", n + 1))?;
        devices.entry(dev.to_owned()).or_default().insert(field.to_owned(), value.to_owned());
        if devices.len() > super::MAX_CHANNELS {
            return Err(format!("RemoteDevice: more than {} devices listed: refusing the answer", super::MAX_CHANNELS));
        }
    }
    if devices.is_empty() {
        return Err("RemoteDevice: empty answer".to_owned());
    }
    let mut out = Vec::new();
    for (order, (dev, f)) in devices.iter().enumerate() {
        if f.get("Enable").is_some_and(|v| v.eq_ignore_ascii_case("false")) {
            continue;
        }
        let at = format!("RemoteDevice {dev}");
        let digits: String = dev.chars().rev().take_while(char::is_ascii_digit).collect::<Vec<_>>().into_iter().rev().collect();
        let channel = match digits.parse::<u32>() {
            Ok(i) if !digits.is_empty() => i + 1,
            _ => order as u32 + 1,
        };
        let host = f.get("Address").map(|s| s.trim()).filter(|s| !s.is_empty()).ok_or_else(|| format!("{at}: missing Address"))?;
        let num = |k: &str| -> Result<Option<u16>, String> {
            match f.get(k).map(|s| s.trim()).filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(v) => v.parse().map(Some).map_err(|_| format!("{at}: {k} {v:?} is not a port")),
            }
        };
        let rtsp_port = num("RtspPort")?.unwrap_or(554);
        let port = num("Port")?;
        let host_part = if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
        let protocol = f.get("ProtocolType").map(|s| s.to_ascii_lowercase()).unwrap_or_default();
        let given = f.get("VideoInputs[0].MainStreamUrl").map(|s| s.trim()).filter(|s| !s.is_empty());
        let mut l = Listed {
            channel,
            name: f.get("Name").or_else(|| f.get("Machine")).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()),
            host: Some(host.to_owned()),
            username: f.get("UserName").map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()),
            password: f.get("Password").filter(|p| !p.is_empty() && !p.chars().all(|c| c == '*')).map(|p| Secret::new(p.clone())),
            ..Default::default()
        };
        if let Some(u) = given {
            l.url = Some(url::Url::parse(u).map_err(|e| format!("{at}: VideoInputs[0].MainStreamUrl is not a URL: {e}"))?);
        } else if protocol == "onvif" {
            l.onvif = url::Url::parse(&format!("http://{host_part}:{}/onvif/device_service", port.unwrap_or(80))).ok();
        } else {
            // Dahua's documented RTSP path: main stream of the camera's channel 1.
            l.url = url::Url::parse(&format!("rtsp://{host_part}:{rtsp_port}/cam/realmonitor?channel=1&subtype=0")).ok();
        }
        out.push(l);
    }
    Ok(out)
}

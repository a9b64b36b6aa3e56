//! Hikvision NVRs: `GET /ISAPI/ContentMgmt/InputProxy/channels` (Hikvision ISAPI, "Input Proxy"
//! resource), HTTP Digest. Each `InputProxyChannel` names the camera's address, protocol and
//! port; the password is write-only in ISAPI, so it never comes back.

use super::http::Http;
use super::xml;
use super::{Credentials, Listed};
use crate::config::Secret;

const PATH: &str = "/ISAPI/ContentMgmt/InputProxy/channels";

pub async fn list(http: &Http, base: &url::Url, creds: Option<&Credentials>) -> Result<Vec<Listed>, String> {
    let mut url = base.clone();
    url.set_path(PATH);
    let text = http.get(&url, creds).await.map_err(|e| format!("{PATH}: {e}"))?;
    parse(&text)
}

/// Parses an `InputProxyChannelList`; any channel lacking its id or address fails the whole
/// answer (nothing half-imported).
pub fn parse(text: &str) -> Result<Vec<Listed>, String> {
    let doc = xml::parse(text).map_err(|e| format!("{PATH}: {e}"))?;
    if doc.name != "InputProxyChannelList" {
        return Err(format!("{PATH}: expected <InputProxyChannelList>, got <{}>", doc.name));
    }
    let mut out = Vec::new();
    for (i, ch) in doc.children_named("InputProxyChannel").enumerate() {
        let at = format!("{PATH}: InputProxyChannel[{i}]");
        let id: u32 = ch.text_at(&["id"]).ok_or_else(|| format!("{at}: missing <id>"))?.parse().map_err(|_| format!("{at}: <id> is not a channel number"))?;
        if id as usize > super::MAX_CHANNELS {
            return Err(format!("{at}: channel {id} is beyond {}", super::MAX_CHANNELS));
        }
        let d = ch.child("sourceInputPortDescriptor").ok_or_else(|| format!("{at} (channel {id}): missing <sourceInputPortDescriptor>"))?;
        let host = d.text_at(&["ipAddress"]).or_else(|| d.text_at(&["hostName"])).ok_or_else(|| format!("{at} (channel {id}): missing <ipAddress>"))?;
        let port: Option<u16> = d.text_at(&["managePortNo"]).and_then(|p| p.parse().ok());
        let protocol = d.text_at(&["proxyProtocol"]).unwrap_or("HIKVISION").to_ascii_uppercase();
        let src_port: u32 = d.text_at(&["srcInputPort"]).and_then(|p| p.parse().ok()).unwrap_or(1);
        let host_part = if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
        let mut l = Listed {
            channel: id,
            name: ch.text_at(&["name"]).map(str::to_owned),
            host: Some(host.to_owned()),
            username: d.text_at(&["userName"]).map(str::to_owned),
            // ISAPI never returns the password; a firmware that does would put it here.
            password: d.text_at(&["password"]).filter(|p| !p.chars().all(|c| c == '*')).map(Secret::new),
            ..Default::default()
        };
        match protocol.as_str() {
            // Hikvision cameras: the documented RTSP path, main stream of the source input.
            "HIKVISION" => {
                l.url = url::Url::parse(&format!("rtsp://{host_part}:554/Streaming/Channels/{src_port}01")).ok();
            }
            // ONVIF (and any other protocol): ask the camera, at its management port for ONVIF.
            _ => {
                let p = if protocol == "ONVIF" { port.unwrap_or(80) } else { 80 };
                l.onvif = url::Url::parse(&format!("http://{host_part}:{p}/onvif/device_service")).ok();
            }
        }
        out.push(l);
    }
    Ok(out)
}

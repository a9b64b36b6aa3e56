//! WS-Discovery (OASIS WS-Discovery 1.0 as profiled by the ONVIF Core specification): one
//! multicast Probe for `dn:NetworkVideoTransmitter` to 239.255.255.250:3702, then the
//! ProbeMatches' XAddrs (device service URLs) collected until the deadline.

use std::collections::BTreeSet;
use std::time::Duration;

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;
use tokio::net::UdpSocket;

use super::xml;

const GROUP: (std::net::Ipv4Addr, u16) = (std::net::Ipv4Addr::new(239, 255, 255, 250), 3702);

fn probe_message(id: &str) -> std::io::Result<String> {
    let mut w = Writer::new(Vec::new());
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let mut env = BytesStart::new("s:Envelope");
    env.push_attribute(("xmlns:s", "http://www.w3.org/2003/05/soap-envelope"));
    env.push_attribute(("xmlns:a", "http://schemas.xmlsoap.org/ws/2004/08/addressing"));
    env.push_attribute(("xmlns:d", "http://schemas.xmlsoap.org/ws/2005/04/discovery"));
    env.push_attribute(("xmlns:dn", "http://www.onvif.org/ver10/network/wsdl"));
    w.write_event(Event::Start(env))?;
    w.create_element("s:Header").write_inner_content(|w| {
        w.create_element("a:Action").write_text_content(BytesText::new("http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe"))?;
        w.create_element("a:MessageID").write_text_content(BytesText::new(id))?;
        w.create_element("a:To").write_text_content(BytesText::new("urn:schemas-xmlsoap-org:ws:2005:04:discovery"))?;
        Ok(())
    })?;
    w.create_element("s:Body").write_inner_content(|w| {
        w.create_element("d:Probe").write_inner_content(|w| {
            w.create_element("d:Types").write_text_content(BytesText::new("dn:NetworkVideoTransmitter"))?;
            Ok(())
        })?;
        Ok(())
    })?;
    w.write_event(Event::End(BytesEnd::new("s:Envelope")))?;
    String::from_utf8(w.into_inner()).map_err(std::io::Error::other)
}

/// The device service URLs of every device answering within `wait`, sorted and deduplicated.
pub async fn probe(wait: Duration) -> Result<Vec<url::Url>, String> {
    let sock = UdpSocket::bind("0.0.0.0:0").await.map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    sock.set_multicast_ttl_v4(1).map_err(|e| format!("multicast TTL: {e}"))?;
    let id = format!("uuid:{:032x}", rand::random::<u128>());
    let msg = probe_message(&id).map_err(|e| format!("cannot build the Probe: {e}"))?;
    // UDP is lossy: the specification has clients repeat the probe.
    for _ in 0..2 {
        sock.send_to(msg.as_bytes(), GROUP).await.map_err(|e| format!("cannot send the Probe to 239.255.255.250:3702: {e} (is there a multicast route?)"))?;
    }
    let mut found = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok(r) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await else { break };
        let Ok((n, from)) = r else { continue };
        let Ok(text) = std::str::from_utf8(&buf[..n]) else { continue };
        let Ok(doc) = xml::parse(text) else {
            tracing::debug!(%from, "ignoring a malformed WS-Discovery answer");
            continue;
        };
        let mut matches = Vec::new();
        doc.find_all("ProbeMatch", &mut matches);
        for m in matches {
            let Some(xaddrs) = m.text_at(&["XAddrs"]) else { continue };
            // Several addresses may be listed; prefer one on the host that answered.
            let urls: Vec<url::Url> = xaddrs.split_whitespace().filter_map(|s| url::Url::parse(s).ok()).filter(|u| u.scheme() == "http" || u.scheme() == "https").collect();
            let best = urls.iter().find(|u| u.host_str() == Some(&from.ip().to_string())).or(urls.first());
            if let Some(u) = best {
                found.insert(u.clone());
            }
        }
    }
    Ok(found.into_iter().collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_is_well_formed() {
        let m = super::probe_message("uuid:1").unwrap();
        let doc = super::xml::parse(&m).unwrap();
        assert_eq!(doc.find("Types").unwrap().text, "dn:NetworkVideoTransmitter");
    }
}

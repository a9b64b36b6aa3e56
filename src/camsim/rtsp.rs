//! RTSP/1.0 message framing (RFC 2326 §4, §6, §7, §10.12): parsing requests and interleaved
//! frames from the client's byte stream, and serializing responses.

use std::fmt::Write as _;

use bytes::{Buf, BytesMut};

/// Largest request (headers + body) accepted; anything bigger is a broken client.
pub(crate) const MAX_REQUEST: usize = 64 * 1024;

/// A parsed RTSP request.
#[derive(Debug)]
pub(crate) struct Request {
    pub method: String,
    pub uri: String,
    headers: Vec<(String, String)>,
}

impl Request {
    /// Value of header `name` (case-insensitive, RFC 2326 §4.2).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn cseq(&self) -> Option<&str> {
        self.header("CSeq")
    }
}

/// One message from the client.
#[derive(Debug)]
pub(crate) enum Message {
    Request(Request),
    /// An interleaved binary frame (RFC 2326 §10.12), e.g. an RTCP receiver report; ignored.
    Interleaved {
        channel: u8,
        len: usize,
    },
    /// A response from the client (RFC 2326 §7; e.g. ffmpeg answers what it takes for a
    /// server request with 501); ignored, we never send requests.
    Response {
        status: String,
    },
}

/// A message that cannot be parsed; the connection cannot be resynchronized after it.
#[derive(Debug)]
pub(crate) struct BadMessage {
    pub reason: String,
    /// CSeq, when the headers got that far.
    pub cseq: Option<String>,
}

/// Takes the next complete message off the front of `buf`, `Ok(None)` if more bytes are needed.
pub(crate) fn parse(buf: &mut BytesMut) -> Result<Option<Message>, BadMessage> {
    let bad = |reason: &str| BadMessage {
        reason: reason.to_string(),
        cseq: None,
    };
    // Stray CR/LF between messages are allowed (RFC 2326 §15.1 via RFC 2616 §4.1).
    while matches!(buf.first(), Some(b'\r' | b'\n')) {
        buf.advance(1);
    }
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] == b'$' {
        if buf.len() < 4 {
            return Ok(None);
        }
        let channel = buf[1];
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if buf.len() < 4 + len {
            return Ok(None);
        }
        buf.advance(4 + len);
        return Ok(Some(Message::Interleaved { channel, len }));
    }
    let Some(head_end) = find_subslice(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_REQUEST {
            return Err(bad("request headers too long"));
        }
        if !buf[..buf.len().min(16)]
            .iter()
            .all(|b| b.is_ascii() && *b != 0)
        {
            return Err(bad("not an RTSP request"));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("request is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| bad("malformed header line"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let cseq = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("CSeq"))
        .map(|(_, v)| v.clone());
    let with_cseq = |reason: &str| BadMessage {
        reason: reason.to_string(),
        cseq: cseq.clone(),
    };
    let body_len: usize = match headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))
    {
        Some((_, v)) => v.parse().map_err(|_| with_cseq("bad Content-Length"))?,
        None => 0,
    };
    let total = head_end + 4 + body_len;
    if total > MAX_REQUEST {
        return Err(with_cseq("request too long"));
    }
    if buf.len() < total {
        return Ok(None);
    }
    if let Some(status) = request_line.strip_prefix("RTSP/1.0 ") {
        let status = status.to_string();
        buf.advance(total);
        return Ok(Some(Message::Response { status }));
    }
    let mut parts = request_line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(with_cseq("malformed request line"));
    };
    if version != "RTSP/1.0" {
        return Err(with_cseq("unsupported RTSP version"));
    }
    if method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(with_cseq("malformed method"));
    }
    let request = Request {
        method: method.to_string(),
        uri: uri.to_string(),
        headers,
    };
    // The body (SET_PARAMETER's, say) is not needed.
    buf.advance(total);
    Ok(Some(Message::Request(request)))
}

fn find_subslice(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A response under construction.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    headers: Vec<(&'static str, String)>,
    body: Option<(&'static str, String)>,
}

impl Response {
    pub(crate) fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: None,
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn body(mut self, content_type: &'static str, body: String) -> Self {
        self.body = Some((content_type, body));
        self
    }

    /// Serializes the response, echoing `cseq` (RFC 2326 §12.17).
    pub(crate) fn serialize(&self, cseq: Option<&str>) -> Vec<u8> {
        let mut s = String::with_capacity(256);
        let _ = write!(s, "RTSP/1.0 {} {}\r\n", self.status, reason(self.status));
        if let Some(cseq) = cseq {
            let _ = write!(s, "CSeq: {cseq}\r\n");
        }
        s.push_str("Server: understudy-camsim\r\n");
        for (k, v) in &self.headers {
            let _ = write!(s, "{k}: {v}\r\n");
        }
        match &self.body {
            Some((ct, body)) => {
                let _ = write!(
                    s,
                    "Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
            None => s.push_str("\r\n"),
        }
        s.into_bytes()
    }
}

/// Reason phrases (RFC 2326 §7.1.1).
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        454 => "Session Not Found",
        455 => "Method Not Valid in This State",
        459 => "Aggregate Operation Not Allowed",
        461 => "Unsupported Transport",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        505 => "RTSP Version Not Supported",
        _ => "Unknown",
    }
}

/// The path of a request URI: `rtsp://host:port/cam/1/trackID=0?x` → `/cam/1/trackID=0`.
pub(crate) fn uri_path(uri: &str) -> &str {
    let rest = match uri.find("://") {
        Some(i) => {
            let after = &uri[i + 3..];
            after.find('/').map(|j| &after[j..]).unwrap_or("/")
        }
        None => uri,
    };
    rest.split(['?', '#']).next().unwrap_or(rest)
}

/// The request URI without user info (`rtsp://user:pass@host/...` → `rtsp://host/...`), for
/// Content-Base and logs.
pub(crate) fn strip_userinfo(uri: &str) -> String {
    if let Some(i) = uri.find("://") {
        let authority_end = uri[i + 3..]
            .find('/')
            .map(|j| i + 3 + j)
            .unwrap_or(uri.len());
        if let Some(at) = uri[i + 3..authority_end].rfind('@') {
            return format!("{}{}", &uri[..i + 3], &uri[i + 3 + at + 1..]);
        }
    }
    uri.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_and_interleaved_frames() {
        let mut buf = BytesMut::from(
            &b"OPTIONS rtsp://h/cam/1 RTSP/1.0\r\nCSeq: 1\r\n\r\n$\x01\x00\x02ab\
               SET_PARAMETER * RTSP/1.0\r\ncseq: 2\r\nContent-Length: 3\r\n\r\nxyz\r\nDESC"[..],
        );
        let Some(Message::Request(r)) = parse(&mut buf).unwrap() else {
            panic!()
        };
        assert_eq!((r.method.as_str(), r.cseq()), ("OPTIONS", Some("1")));
        assert!(matches!(
            parse(&mut buf).unwrap(),
            Some(Message::Interleaved { channel: 1, len: 2 })
        ));
        let Some(Message::Request(r)) = parse(&mut buf).unwrap() else {
            panic!()
        };
        assert_eq!((r.method.as_str(), r.cseq()), ("SET_PARAMETER", Some("2")));
        assert!(parse(&mut buf).unwrap().is_none());
        assert_eq!(&buf[..], b"DESC");
    }

    #[test]
    fn rejects_garbage() {
        let mut buf = BytesMut::from(
            &b"RTSP/1.0 501 Not Implemented\r\n\r\nGET / HTTP/1.1\r\nCSeq: 9\r\n\r\n"[..],
        );
        assert!(matches!(
            parse(&mut buf),
            Ok(Some(Message::Response { .. }))
        ));
        let e = parse(&mut buf).unwrap_err();
        assert_eq!(e.cseq.as_deref(), Some("9"));
        let mut buf = BytesMut::from(&b"\x16\x03\x01\x00\xa5\x01\x00"[..]);
        assert!(parse(&mut buf).is_err());
    }

    #[test]
    fn response_serialization_and_uris() {
        let r = Response::new(461).header("X", "y").serialize(Some("3"));
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "RTSP/1.0 461 Unsupported Transport\r\nCSeq: 3\r\nServer: understudy-camsim\r\nX: y\r\n\r\n"
        );
        assert_eq!(
            uri_path("rtsp://h:1/cam/2/trackID=0?a=b"),
            "/cam/2/trackID=0"
        );
        assert_eq!(uri_path("rtsp://h:1"), "/");
        assert_eq!(uri_path("/cam/3"), "/cam/3");
        assert_eq!(strip_userinfo("rtsp://u:p@h:1/cam/1"), "rtsp://h:1/cam/1");
        assert_eq!(strip_userinfo("rtsp://h:1/cam/1"), "rtsp://h:1/cam/1");
    }
}

//! A small element tree parsed with `quick-xml`, for the SOAP and ISAPI answers import reads.
//!
//! Names are kept without their namespace prefix (`tt:Uri` → `Uri`): the documents we read use
//! one vocabulary each, and vendors differ in prefixes.

use quick_xml::events::Event;
use quick_xml::Reader;

/// Largest element count accepted in one answer (10,000 channels × a few fields fit easily).
const MAX_ELEMENTS: usize = 500_000;
const MAX_DEPTH: usize = 64;

#[derive(Debug, Default, Clone)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child named `name`.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The trimmed text of the child at `path` (`["A", "B"]`), if present and non-empty.
    pub fn text_at(&self, path: &[&str]) -> Option<&str> {
        let mut e = self;
        for p in path {
            e = e.child(p)?;
        }
        let t = e.text.trim();
        (!t.is_empty()).then_some(t)
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The first element named `name` anywhere below (depth first), or self.
    pub fn find(&self, name: &str) -> Option<&Element> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }

    /// Every element named `name` anywhere below, in document order.
    pub fn find_all<'a>(&'a self, name: &str, out: &mut Vec<&'a Element>) {
        for c in &self.children {
            if c.name == name {
                out.push(c);
            } else {
                c.find_all(name, out);
            }
        }
    }
}

fn local(name: &[u8]) -> String {
    let n = match name.iter().rposition(|&b| b == b':') {
        Some(i) => &name[i + 1..],
        None => name,
    };
    String::from_utf8_lossy(n).into_owned()
}

/// Parses a whole document into its root element. A truncated or malformed document is an error
/// that says where it broke.
pub fn parse(text: &str) -> Result<Element, String> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let pos = reader.buffer_position();
        match reader.read_event() {
            Err(e) => return Err(format!("malformed XML at byte {pos}: {e}")),
            Ok(Event::Eof) => break,
            Ok(Event::Start(s)) | Ok(Event::Empty(s)) if root.is_some() => {
                let _ = s;
                return Err(format!("malformed XML at byte {pos}: content after the root element"));
            }
            Ok(ev @ (Event::Start(_) | Event::Empty(_))) => {
                count += 1;
                if count > MAX_ELEMENTS || stack.len() > MAX_DEPTH {
                    return Err(format!("XML answer too large (more than {MAX_ELEMENTS} elements or {MAX_DEPTH} levels)"));
                }
                let (s, empty) = match &ev {
                    Event::Start(s) => (s, false),
                    Event::Empty(s) => (s, true),
                    _ => unreachable!("matched above"),
                };
                let mut el = Element { name: local(s.name().as_ref()), ..Default::default() };
                for a in s.attributes().flatten() {
                    let v = a.unescape_value().map_err(|e| format!("malformed XML attribute at byte {pos}: {e}"))?;
                    el.attrs.push((local(a.key.as_ref()), v.into_owned()));
                }
                if empty {
                    match stack.last_mut() {
                        Some(p) => p.children.push(el),
                        None => root = Some(el),
                    }
                } else {
                    stack.push(el);
                }
            }
            Ok(Event::End(_)) => {
                let Some(el) = stack.pop() else {
                    return Err(format!("malformed XML at byte {pos}: unexpected end tag"));
                };
                match stack.last_mut() {
                    Some(p) => p.children.push(el),
                    None => root = Some(el),
                }
            }
            Ok(Event::Text(t)) => {
                if let Some(el) = stack.last_mut() {
                    let s = t.decode().map_err(|e| format!("malformed XML text at byte {pos}: {e}"))?;
                    let s = quick_xml::escape::unescape(&s).map_err(|e| format!("malformed XML text at byte {pos}: {e}"))?;
                    el.text.push_str(&s);
                }
            }
            Ok(Event::CData(t)) => {
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Ok(Event::GeneralRef(r)) => {
                if let Some(el) = stack.last_mut() {
                    let name = String::from_utf8_lossy(&r);
                    let raw = format!("&{name};");
                    let s = quick_xml::escape::unescape(&raw).map_err(|e| format!("malformed XML at byte {pos}: {e}"))?;
                    el.text.push_str(&s);
                }
            }
            Ok(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(format!("truncated XML: <{}> is never closed", stack.last().map_or("", |e| e.name.as_str())));
    }
    root.ok_or_else(|| "empty XML document".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespaced_soap() {
        let e = parse(r#"<?xml version="1.0"?><s:Envelope xmlns:s="x"><s:Body><trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>rtsp://h/a?x=1&amp;y=2</tt:Uri></trt:MediaUri></trt:GetStreamUriResponse></s:Body></s:Envelope>"#).unwrap();
        assert_eq!(e.find("MediaUri").unwrap().text_at(&["Uri"]), Some("rtsp://h/a?x=1&y=2"));
    }

    #[test]
    fn truncated_is_an_error() {
        let err = parse("<a><b>text</b><c>").unwrap_err();
        assert!(err.contains("truncated") || err.contains("malformed"), "{err}");
        assert!(parse("").is_err());
    }
}

//! A minimal, distrustful ISO BMFF box reader (ISO/IEC 14496-12 §4.2): box headers and the
//! children of a container held in memory. Every size is checked against what is there.

use std::fmt;

/// A four-character box type.
pub(crate) type Kind = [u8; 4];

/// Shows a box type for messages (non-printable bytes escaped).
pub(crate) struct KindDisplay(pub Kind);

impl fmt::Display for KindDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            if b.is_ascii_graphic() || b == b' ' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// A box header as found in a file or buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub kind: Kind,
    /// 8, or 16 with a 64-bit `largesize`.
    pub header_len: u64,
    /// Whole box size, header included. Never 0 (a "to end of file" size is rejected).
    pub size: u64,
}

/// Why a header could not be taken at face value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeaderProblem {
    /// Fewer bytes than a header needs.
    Short,
    /// Size field 0 ("extends to end of file"): what a zero-filled region looks like.
    ZeroSize,
    /// Size smaller than the header itself.
    TooSmall(u64),
}

impl fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderProblem::Short => f.write_str("incomplete box header"),
            HeaderProblem::ZeroSize => f.write_str("box of size 0"),
            HeaderProblem::TooSmall(size) => write!(f, "box size {size} smaller than its header"),
        }
    }
}

/// Parses a box header from the start of `buf` (which may hold more than the header).
pub(crate) fn parse_header(buf: &[u8]) -> Result<Header, HeaderProblem> {
    let (size32, kind) = match buf {
        [a, b, c, d, k0, k1, k2, k3, ..] => {
            (u32::from_be_bytes([*a, *b, *c, *d]), [*k0, *k1, *k2, *k3])
        }
        _ => return Err(HeaderProblem::Short),
    };
    let (header_len, size) = match size32 {
        0 => return Err(HeaderProblem::ZeroSize),
        1 => {
            let large = buf.get(8..16).ok_or(HeaderProblem::Short)?;
            (16, be_u64(large))
        }
        n => (8, u64::from(n)),
    };
    if size < header_len {
        return Err(HeaderProblem::TooSmall(size));
    }
    Ok(Header {
        kind,
        header_len,
        size,
    })
}

/// One child box within an in-memory container body.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Child<'a> {
    pub kind: Kind,
    /// The box's body (after its header).
    pub body: &'a [u8],
    /// The whole box, header included.
    pub whole: &'a [u8],
}

/// Iterates over the boxes packed in `buf`; yields an error (then stops) at the first box that
/// does not fit.
pub(crate) fn children(buf: &[u8]) -> Children<'_> {
    Children { rest: buf }
}

pub(crate) struct Children<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Children<'a> {
    type Item = Result<Child<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.rest);
        let header = match parse_header(rest) {
            Ok(h) => h,
            Err(p) => return Some(Err(p.to_string())),
        };
        let size = match usize::try_from(header.size) {
            Ok(s) if s <= rest.len() => s,
            _ => {
                return Some(Err(format!(
                    "box '{}' of {} bytes overruns its container ({} bytes left)",
                    KindDisplay(header.kind),
                    header.size,
                    rest.len()
                )))
            }
        };
        let (whole, after) = rest.split_at(size);
        self.rest = after;
        // header_len is 8 or 16 and size >= header_len, so this slice is in bounds.
        let body = &whole[header.header_len as usize..];
        Some(Ok(Child {
            kind: header.kind,
            body,
            whole,
        }))
    }
}

/// The first child of `kind`, if any; errors if the container is malformed before it.
pub(crate) fn find<'a>(buf: &'a [u8], kind: &Kind) -> Result<Option<Child<'a>>, String> {
    for child in children(buf) {
        let child = child?;
        if &child.kind == kind {
            return Ok(Some(child));
        }
    }
    Ok(None)
}

/// Like [`find`], but the child is required.
pub(crate) fn require<'a>(buf: &'a [u8], kind: &Kind, parent: &str) -> Result<Child<'a>, String> {
    find(buf, kind)?.ok_or_else(|| format!("no '{}' in '{parent}'", KindDisplay(*kind)))
}

/// A cursor over big-endian fields of a box body; every read is bounds-checked.
pub(crate) struct Fields<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Fields<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Fields { buf, what }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!("'{}' is truncated", self.what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(be_u64(self.take(8)?))
    }

    /// The full-box version and flags (ISO/IEC 14496-12 §4.2.2).
    pub fn version_flags(&mut self) -> Result<(u8, u32), String> {
        let v = self.u32()?;
        Ok(((v >> 24) as u8, v & 0x00ff_ffff))
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
}

/// Big-endian u64 from the first 8 bytes of `b` (which the callers guarantee).
fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(
            parse_header(b"\0\0\0\x08free"),
            Ok(Header {
                kind: *b"free",
                header_len: 8,
                size: 8
            })
        );
        assert_eq!(parse_header(b"\0\0\0\0mdat"), Err(HeaderProblem::ZeroSize));
        assert_eq!(
            parse_header(b"\0\0\0\x04mdat"),
            Err(HeaderProblem::TooSmall(4))
        );
        assert_eq!(
            parse_header(b"\0\0\0\x01mdat\0\0"),
            Err(HeaderProblem::Short)
        );
        assert_eq!(
            parse_header(b"\0\0\0\x01mdat\0\0\0\0\0\0\0\x20"),
            Ok(Header {
                kind: *b"mdat",
                header_len: 16,
                size: 32
            })
        );
        assert_eq!(parse_header(b"\0\0\0"), Err(HeaderProblem::Short));
    }

    #[test]
    fn children_stop_at_overrun() {
        let buf = b"\0\0\0\x09abcdX\0\0\0\x10efgh";
        let mut it = children(buf);
        let first = it.next().unwrap().unwrap();
        assert_eq!(&first.kind, b"abcd");
        assert_eq!(first.body, b"X");
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
    }
}

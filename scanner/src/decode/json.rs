//! A small JSON tokenizer over the raw bytes: every string (keys and values) with its JSON path
//! and byte range, so `scan_body` can skip re-scanning strings whose bytes the raw body scan
//! already covered (see `body.rs`).

/// One JSON string of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonStr {
    /// JSON path as `scan_body` reports it (`$.a.b[1]`; for a key, the path of its member).
    pub path: String,
    /// Byte range of the string's content (between the quotes) in the document.
    pub start: usize,
    pub end: usize,
    /// The content contains backslash escapes (so it differs from its raw bytes).
    pub escaped: bool,
    /// This is an object key.
    pub key: bool,
}

/// Nesting limit (serde_json's default recursion limit is 128).
const MAX_DEPTH: usize = 128;

/// All strings of the JSON document `data` in document order, or `None` if `data` is not
/// JSON (this tokenizer is at least as lenient as serde_json: it does not check UTF-8, control
/// bytes in strings or number syntax beyond the character set).
pub(crate) fn strings(data: &[u8], root: &str) -> Option<Vec<JsonStr>> {
    let mut t = Tok {
        d: data,
        i: 0,
        out: Vec::new(),
    };
    let mut path = format!("{root}$");
    t.ws();
    t.value(&mut path, 0)?;
    t.ws();
    (t.i == data.len()).then_some(t.out)
}

/// Decodes the content of a JSON string (`raw` is what is between the quotes), giving the same
/// bytes as serde_json for every string serde_json accepts. `None` on a bad escape or a lone
/// surrogate (which serde_json refuses); invalid UTF-8 outside escapes is passed through.
pub(crate) fn unescape(raw: &[u8]) -> Option<Vec<u8>> {
    unescape_mapped(raw, &mut Vec::new())
}

/// [`unescape`], also recording every escape as `(raw start, raw end, end in the output)`
/// in `escapes` (in order), so offsets can be mapped between `raw` and the result.
pub(crate) fn unescape_mapped(
    raw: &[u8],
    escapes: &mut Vec<(usize, usize, usize)>,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'\\', &raw[i..]) {
        out.extend_from_slice(&raw[i..i + p]);
        let j = i + p;
        let b = match *raw.get(j + 1)? {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let mut c = hex4(raw.get(j + 2..j + 6)?)?;
                i = j + 6;
                if (0xD800..0xDC00).contains(&c) {
                    if raw.get(i..i + 2) != Some(b"\\u") {
                        return None;
                    }
                    let lo = hex4(raw.get(i + 2..i + 6)?)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return None;
                    }
                    c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                } else if (0xDC00..0xE000).contains(&c) {
                    return None;
                }
                let ch = char::from_u32(c)?;
                out.extend_from_slice(ch.encode_utf8(&mut [0u8; 4]).as_bytes());
                escapes.push((j, i, out.len()));
                continue;
            }
            _ => return None,
        };
        out.push(b);
        i = j + 2;
        escapes.push((j, i, out.len()));
    }
    out.extend_from_slice(&raw[i..]);
    Some(out)
}

fn hex4(h: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &b in h {
        v = v << 4 | (b as char).to_digit(16)?;
    }
    Some(v)
}

struct Tok<'a> {
    d: &'a [u8],
    i: usize,
    out: Vec<JsonStr>,
}

impl Tok<'_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.d.get(self.i) {
            self.i += 1;
        }
    }

    /// Parses a string starting at the opening quote; returns (start, end, escaped).
    fn string(&mut self) -> Option<(usize, usize, bool)> {
        debug_assert_eq!(self.d[self.i], b'"');
        let start = self.i + 1;
        let mut j = start;
        let mut escaped = false;
        loop {
            j += memchr::memchr2(b'"', b'\\', &self.d[j..])?;
            if self.d[j] == b'"' {
                self.i = j + 1;
                return Some((start, j, escaped));
            }
            escaped = true;
            match *self.d.get(j + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j += 2,
                b'u' => {
                    let h = self.d.get(j + 2..j + 6)?;
                    if !h.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    j += 6;
                }
                _ => return None,
            }
        }
    }

    fn value(&mut self, path: &mut String, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match *self.d.get(self.i)? {
            b'"' => {
                let (start, end, escaped) = self.string()?;
                self.out.push(JsonStr {
                    path: path.clone(),
                    start,
                    end,
                    escaped,
                    key: false,
                });
            }
            b'{' => {
                self.i += 1;
                self.ws();
                if self.d.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    if self.d.get(self.i) != Some(&b'"') {
                        return None;
                    }
                    let (start, end, escaped) = self.string()?;
                    let len = path.len();
                    path.push('.');
                    if escaped {
                        path.extend(
                            String::from_utf8_lossy(&unescape(&self.d[start..end])?)
                                .chars()
                                .take(64),
                        );
                    } else {
                        path.extend(
                            String::from_utf8_lossy(&self.d[start..end])
                                .chars()
                                .take(64),
                        );
                    }
                    self.out.push(JsonStr {
                        path: path.clone(),
                        start,
                        end,
                        escaped,
                        key: true,
                    });
                    self.ws();
                    if self.d.get(self.i) != Some(&b':') {
                        return None;
                    }
                    self.i += 1;
                    self.ws();
                    self.value(path, depth + 1)?;
                    path.truncate(len);
                    self.ws();
                    match *self.d.get(self.i)? {
                        b',' => self.i += 1,
                        b'}' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.d.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Some(());
                }
                let mut n = 0usize;
                loop {
                    self.ws();
                    let len = path.len();
                    path.push('[');
                    path.push_str(&n.to_string());
                    path.push(']');
                    self.value(path, depth + 1)?;
                    path.truncate(len);
                    n += 1;
                    self.ws();
                    match *self.d.get(self.i)? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b't' => self.lit(b"true")?,
            b'f' => self.lit(b"false")?,
            b'n' => self.lit(b"null")?,
            b'-' | b'0'..=b'9' => {
                let n = self.d[self.i..]
                    .iter()
                    .take_while(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                    .count();
                self.i += n;
            }
            _ => return None,
        }
        Some(())
    }

    fn lit(&mut self, word: &[u8]) -> Option<()> {
        if self.d[self.i..].starts_with(word) {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }
}

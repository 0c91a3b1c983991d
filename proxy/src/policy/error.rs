//! Policy errors with file, line, key and reason.
use std::fmt;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// A policy file was refused.
///
/// Displays as `policy.toml:12: route[3].host: <reason>`; the line is left
/// out when unknown (e.g. a policy built in memory), the key when the error is
/// about the file as a whole (a TOML syntax error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    /// The file name (or other origin) given to the loader.
    pub origin: String,
    /// 1-based line of the offending key, if known.
    pub line: Option<usize>,
    /// Dotted key path, like `route[3].matches[0].path_regex` (may be empty).
    pub key: String,
    /// What is wrong and what to write instead.
    pub reason: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A validation failure before the file/line are attached.
#[derive(Clone, Debug)]
pub(crate) struct Invalid {
    pub path: Vec<Seg>,
    pub reason: String,
}

impl Invalid {
    /// Renders the key path as `route[3].matches[0].path`.
    pub fn key(&self) -> String {
        render_key(&self.path)
    }

    /// Attaches origin and, given the source text, the line of the key.
    pub fn into_error(self, origin: &str, text: Option<&str>) -> PolicyError {
        let line = text.and_then(|t| locate(t, &self.path));
        PolicyError {
            origin: origin.to_string(),
            line,
            key: self.key(),
            reason: self.reason,
        }
    }
}

/// Renders a key path.
pub(crate) fn render_key(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if bare {
                    out.push_str(k);
                } else {
                    out.push_str(&format!("{k:?}"));
                }
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// 1-based line number of byte offset `pos` in `text`.
pub(crate) fn line_of(text: &str, pos: usize) -> usize {
    let pos = pos.min(text.len());
    text.as_bytes()[..pos]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Finds the line of the deepest existing node along `path` in `text`.
fn locate(text: &str, path: &[Seg]) -> Option<usize> {
    let root = DeTable::parse(text).ok()?;
    let mut best: Option<usize> = None;
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    for seg in path {
        match seg {
            Seg::Key(k) => {
                let t = match (table, value) {
                    (Some(t), None) => t,
                    (_, Some(v)) => v.get_ref().as_table()?,
                    (None, None) => return best,
                };
                let Some((key, v)) = t.get_key_value(k.as_str()) else {
                    return best;
                };
                best = Some(line_of(text, key.span().start));
                value = Some(v);
                table = None;
            }
            Seg::Index(i) => {
                let Some(v) = value else { return best };
                let Some(arr) = v.get_ref().as_array() else {
                    return best;
                };
                let Some(item) = arr.get(*i) else { return best };
                let span = item.span();
                // An array-of-tables element spans from its contents; point at
                // its first key if the table span starts after the header.
                best = Some(line_of(text, span.start));
                if let Some(t) = item.get_ref().as_table() {
                    if let Some(first) = t.keys().map(|k| k.span().start).min() {
                        if span.start > first || span.is_empty() {
                            best = Some(line_of(text, first));
                        }
                    }
                }
                value = Some(item);
            }
        }
    }
    best
}

/// The key path of the deepest node whose key or value span contains byte
/// offset `pos` (used to name the key in TOML deserialisation errors).
pub(crate) fn path_at(text: &str, pos: usize) -> Vec<Seg> {
    match DeTable::parse(text) {
        Ok(root) => find_in_table(root.get_ref(), pos).unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

fn find_in_table(table: &DeTable<'_>, pos: usize) -> Option<Vec<Seg>> {
    for (key, value) in table.iter() {
        let here = Seg::Key(key.get_ref().to_string());
        if key.span().contains(&pos) {
            return Some(vec![here]);
        }
        if let Some(mut sub) = find_in_value(value, pos) {
            sub.insert(0, here);
            return Some(sub);
        }
    }
    None
}

/// Children are searched before the node's own span: array-of-tables
/// elements do not always lie inside their parent's span.
fn find_in_value(value: &Spanned<DeValue<'_>>, pos: usize) -> Option<Vec<Seg>> {
    let inner = match value.get_ref() {
        DeValue::Table(t) => find_in_table(t, pos),
        DeValue::Array(a) => a.iter().enumerate().find_map(|(i, item)| {
            find_in_value(item, pos).map(|mut sub| {
                sub.insert(0, Seg::Index(i));
                sub
            })
        }),
        _ => None,
    };
    match inner {
        Some(path) => Some(path),
        None if value.span().contains(&pos) => Some(Vec::new()),
        None => None,
    }
}

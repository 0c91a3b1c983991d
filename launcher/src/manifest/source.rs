//! A manifest's text plus the machinery to turn byte offsets and `toml` errors into
//! `file:line` messages with did-you-mean suggestions.
use std::ops::Range;
use std::path::PathBuf;

use serde::de::DeserializeOwned;

use super::error::{Location, ManifestError};
use super::suggest::did_you_mean;

/// The TOML text of one manifest (a bottle file, or an agent's front matter).
#[derive(Debug)]
pub(crate) struct SourceFile {
    /// The file on disk, or a `<built-in …>` pseudo path.
    pub path: PathBuf,
    /// How the file is named in messages.
    pub display: String,
    /// The TOML text.
    pub text: String,
    /// The 1-based line in the file where `text` starts (2 for agent front matter).
    pub line_base: usize,
}

impl SourceFile {
    /// The 1-based file line of a byte offset into `text`.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = floor_char_boundary(&self.text, offset.min(self.text.len()));
        self.line_base + self.text[..end].matches('\n').count()
    }

    /// A location for a span (or the whole file when there is none).
    pub fn loc(&self, span: Option<&Range<usize>>) -> Location {
        Location {
            path: self.path.clone(),
            display: self.display.clone(),
            line: span.map(|s| self.line_of(s.start)),
        }
    }

    /// A location for a span, refined to the first line inside it that contains `needle`.
    ///
    /// Used to point at e.g. the `secret = "X"` line inside a `[[route]]` table.
    pub fn loc_within(&self, span: Option<&Range<usize>>, needle: &str) -> Location {
        if let Some(s) = span {
            let start = floor_char_boundary(&self.text, s.start.min(self.text.len()));
            let end = floor_char_boundary(
                &self.text,
                self.extent_end(start, s.end).min(self.text.len()),
            );
            if let Some(pos) = self.text[start..end].find(needle) {
                return self.loc(Some(&(start + pos..start + pos)));
            }
        }
        self.loc(span)
    }

    /// Where the table that starts at `start` ends: when `start` is a `[header]` or
    /// `[[header]]` line, the next header that is not a sub-table of it (toml spans of
    /// array-of-tables elements may cover the header only); otherwise `end`.
    fn extent_end(&self, start: usize, end: usize) -> usize {
        let rest = &self.text[start..];
        let first = rest.split('\n').next().unwrap_or("").trim();
        if !first.starts_with('[') {
            return end;
        }
        let name = first
            .trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let mut offset = start + first.len();
        for line in self.text[offset..].split_inclusive('\n') {
            let t = line.trim();
            if t.starts_with('[') {
                let other = t
                    .trim_start_matches('[')
                    .split(']')
                    .next()
                    .unwrap_or("")
                    .trim();
                if !other.starts_with(&format!("{name}.")) {
                    return offset.max(end);
                }
            }
            offset += line.len();
        }
        self.text.len().max(end)
    }

    /// Deserialises the whole text as `T`, converting `toml` errors into located
    /// [`ManifestError`]s. `table` names the top-level table in messages (`bottle`, `agent`).
    pub fn parse<T: DeserializeOwned>(&self, table: &str) -> Result<T, ManifestError> {
        toml::from_str::<T>(&self.text).map_err(|e| self.convert(&e, table))
    }

    /// Turns a `toml` deserialisation error into a [`ManifestError`].
    fn convert(&self, err: &toml::de::Error, top_table: &str) -> ManifestError {
        let message = err.message().trim().to_string();
        let span = err.span();
        let loc = self.loc(span.as_ref());
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let (key, expected) = split_backticked(rest);
            let table = span
                .as_ref()
                .map(|s| self.enclosing_table(s.start, &key))
                .unwrap_or_else(|| top_table.to_string());
            let table = if table.is_empty() {
                top_table.to_string()
            } else {
                table
            };
            let suggestion = did_you_mean(&key, expected.iter().map(String::as_str));
            return ManifestError::UnknownKey {
                loc,
                key,
                table,
                suggestion,
                note: None,
            };
        }
        if let Some(rest) = message.strip_prefix("unknown variant `") {
            let (value, expected) = split_backticked(rest);
            let key = span
                .as_ref()
                .and_then(|s| self.key_before(s.start))
                .unwrap_or_else(|| "value".to_string());
            let suggestion = did_you_mean(&value, expected.iter().map(String::as_str));
            let choices = expected
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", ");
            return ManifestError::Invalid {
                loc,
                key,
                message: format!("`{value}` is not one of {choices}"),
                suggestion,
            };
        }
        if message.starts_with("invalid type")
            || message.starts_with("invalid value")
            || message.starts_with("invalid length")
        {
            let key = span
                .as_ref()
                .and_then(|s| self.key_before(s.start))
                .unwrap_or_else(|| "value".to_string());
            return ManifestError::WrongType { loc, key, message };
        }
        if let Some(rest) = message.strip_prefix("data did not match any variant of untagged enum ")
        {
            let key = span
                .as_ref()
                .and_then(|s| self.key_before(s.start))
                .unwrap_or_else(|| "value".to_string());
            let expected = match rest.trim() {
                "DlpSpec" => {
                    "true, false or a list of DLP rule ids like [\"github-pat\"]".to_string()
                }
                other => format!("a value of the form `{other}` (see docs/manifests.md)"),
            };
            return ManifestError::WrongType {
                loc,
                key,
                message: format!("expected {expected}"),
            };
        }
        if let Some(rest) = message.strip_prefix("missing field `") {
            let (key, _) = split_backticked(rest);
            let table = span
                .as_ref()
                .map(|s| self.enclosing_table(s.start, ""))
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| top_table.to_string());
            return ManifestError::Syntax {
                loc,
                message: format!("missing required key `{key}` in {table}"),
            };
        }
        ManifestError::Syntax {
            loc,
            message: format!("{message} (TOML syntax; see docs/manifests.md)"),
        }
    }

    /// The table an offset sits in: the inline table's key when the offset is inside one on
    /// the same line (and `key` is not that line's own key), else the nearest `[header]` above.
    /// Empty when the offset is in the top-level table.
    fn enclosing_table(&self, offset: usize, key: &str) -> String {
        let offset = floor_char_boundary(&self.text, offset.min(self.text.len()));
        let line_start = self.text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
        let line = &self.text[line_start..];
        let line = line.split('\n').next().unwrap_or("");
        if let Some(eq) = line.find('=') {
            let lhs = clean_key(&line[..eq]);
            let brace = line.find('{');
            if !key.is_empty() && lhs != key && brace.is_some_and(|b| b > eq) {
                return format!("`{lhs}`");
            }
        }
        for l in self.text[..line_start].lines().rev() {
            let t = l.trim();
            if t.starts_with('[') {
                return t.split('#').next().unwrap_or(t).trim().to_string();
            }
        }
        String::new()
    }

    /// The key whose value starts at (or contains) `offset`: the identifier before the last `=`
    /// between the line start and the offset.
    fn key_before(&self, offset: usize) -> Option<String> {
        let offset = floor_char_boundary(&self.text, offset.min(self.text.len()));
        let line_start = self.text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
        let prefix = &self.text[line_start..offset];
        let eq = prefix.rfind('=')?;
        let before = &prefix[..eq];
        let key: String = before
            .trim_end()
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | '\''))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let key = clean_key(&key);
        (!key.is_empty()).then_some(key)
    }
}

/// Strips whitespace and quotes from a TOML key.
fn clean_key(raw: &str) -> String {
    raw.trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .to_string()
}

/// Splits serde's "`key`, expected one of `a`, `b`" tail into (`key`, [`a`, `b`]).
fn split_backticked(rest: &str) -> (String, Vec<String>) {
    let (first, tail) = match rest.find('`') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let expected = tail
        .split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect();
    (first.to_string(), expected)
}

/// The largest char boundary `<= i` (stable replacement for `str::floor_char_boundary`).
fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::split_backticked;

    #[test]
    fn splits_serde_messages() {
        let (k, e) = split_backticked("rotue`, expected one of `route`, `env`");
        assert_eq!(k, "rotue");
        assert_eq!(e, vec!["route", "env"]);
        let (k, e) = split_backticked("x`, expected `y`");
        assert_eq!((k.as_str(), e), ("x", vec!["y".to_string()]));
    }
}

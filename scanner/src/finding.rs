//! Findings: what the scanner reports. A finding never contains the secret itself.

use std::fmt;

use serde::Serialize;

/// One detected secret. Safe to log, print, serialise and put in audit records: it holds a
/// redacted preview only (see [`Finding::preview`]), never the secret.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The rule that fired (`known-secret` for the bottle's own secrets).
    pub rule_id: String,
    /// Human description of the rule.
    pub description: String,
    /// Byte offset of the secret, absolute in the scanned input or stream.
    pub offset: usize,
    /// Length in bytes of the secret as it appears in the input (with encoding/separators).
    pub len: usize,
    /// Redacted preview: the first 4 bytes of the secret, `…` and its length, e.g.
    /// `ghp_…(40)`. For known secrets only the secret's name, e.g. `GH_TOKEN`.
    pub preview: String,
    /// For known secrets: the secret's name (so a proxy can allow it on its own route).
    pub known_secret: Option<String>,
    /// For known secrets: how it was encoded (`raw`, `base64`, `hex`, `base32`, `percent`,
    /// `json-unicode`, with `+separators` / `+unescaped` when those were stripped/decoded).
    pub encoding: Option<String>,
    /// Where in a structured input it was found; filled by callers and the decoders
    /// (URL path, `query:NAME`, `header:NAME`, JSON path, `multipart:NAME`, `file:line:col`).
    pub location: Option<String>,
}

impl Finding {
    /// Returns the finding with `location` set (prefixing any location already present).
    pub fn at(mut self, location: impl Into<String>) -> Self {
        let loc = location.into();
        self.location = Some(match self.location.take() {
            Some(inner) if !loc.is_empty() => format!("{loc}{inner}"),
            Some(inner) => inner,
            None => loc,
        });
        self
    }
}

/// Builds the redacted preview of a rule finding: first 4 bytes (printable ASCII only) + `…` +
/// total length.
pub(crate) fn redacted_preview(secret: &[u8]) -> String {
    let head: String = secret
        .iter()
        .take(4)
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect();
    format!("{head}…({})", secret.len())
}

impl fmt::Debug for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Finding")
            .field("rule_id", &self.rule_id)
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("preview", &self.preview)
            .field("known_secret", &self.known_secret)
            .field("encoding", &self.encoding)
            .field("location", &self.location)
            .finish()
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.rule_id, self.preview)?;
        if let Some(enc) = &self.encoding {
            write!(f, " ({enc})")?;
        }
        if let Some(loc) = &self.location {
            write!(f, " at {loc}")?;
        } else {
            write!(f, " at byte {}", self.offset)?;
        }
        Ok(())
    }
}

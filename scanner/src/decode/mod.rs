//! Structured decoders feeding the scanner: URLs, headers and request bodies.
//!
//! Every function scans the raw bytes too, so a lying `Content-Type` (or none) never skips the
//! scan; structure only adds decoded views and locations. Findings get `location` set to
//! `path`, `query:NAME`, `header:NAME`, a JSON path like `$.messages[0].content`,
//! `form:NAME`, `multipart:NAME/...`, `body`, `host` ([`scan_host`]) or, for text decoded
//! by [`scan_text`], `percent` / `unescaped`.

mod archive;
mod body;
mod codec;
mod host;
mod json;
mod text;
mod url;

pub use archive::{scan_file_deep, ArchiveError, ArchiveLimits};
pub use body::{decode_content_encoding, scan_body, BodyScan, DecodeError, DecodeLimits};
pub use host::{label_stats, scan_host, LabelStats, MAX_HOST_RUNS};
pub use text::{scan_file, scan_text};
pub(crate) use url::common_clean;
pub use url::{scan_headers, scan_url};

use crate::Finding;

/// Removes findings that repeat the same rule/secret at the same location.
pub(crate) fn dedupe(findings: &mut Vec<Finding>) {
    let mut seen = std::collections::BTreeSet::new();
    findings.retain(|f| {
        seen.insert((
            f.rule_id.clone(),
            f.known_secret.clone(),
            f.location.clone(),
            f.offset,
        ))
    });
}

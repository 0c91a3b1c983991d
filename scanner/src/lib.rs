//! bottle-scanner: secret scanning (DLP) shared by the bottle proxy, the git gate and
//! `bottle scan`.
//!
//! ```
//! use bottle_scanner::Scanner;
//! let scanner = Scanner::builder()
//!     .default_rules(true)
//!     .known_secret("GH_TOKEN", "the-real-token-value-123")
//!     .build()
//!     .unwrap();
//! let findings = scanner.scan(b"curl -H 'x: the-real-token-value-123'");
//! assert_eq!(findings[0].known_secret.as_deref(), Some("GH_TOKEN"));
//! // Streaming: feed chunks, then finish.
//! let mut s = scanner.stream();
//! let mut all = s.feed(b"the-real-tok");
//! all.extend(s.feed(b"en-value-123"));
//! all.extend(s.finish());
//! assert_eq!(all.len(), 1);
//! ```
//!
//! Pipeline: one ASCII-case-insensitive keyword pass over the input (an FDR-style hashed
//! shift-or filter with exact verification) finds rule keywords; each rule's regex then runs
//! only in a small window around its keyword hits. Known secrets are
//! matched in a separator-stripped, escape-decoded view against precomputed encoded needles.
//! Findings carry a redacted preview only — never the secret.

pub mod cli;
pub mod corpus;
pub mod decode;
pub mod error;
pub mod finding;
mod keywords;
mod known;
pub mod rules;
mod scanner;
pub mod stream;

pub use error::RuleError;
pub use finding::Finding;
pub use known::{is_separator, MIN_KNOWN_SECRET_LEN};
pub use scanner::{RuleInfo, Scanner, ScannerBuilder, KNOWN_SECRET_RULE_ID};
pub use stream::StreamScan;

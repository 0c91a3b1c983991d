//! Host-name scanning (first cut: the raw name; the label decoders follow).
use crate::{Finding, Scanner};

/// Scans a target host name for secrets before it is resolved. Findings are located at
/// `host`.
pub fn scan_host(scanner: &Scanner, host: &str) -> Vec<Finding> {
    scanner.scan_located(host.as_bytes(), "host")
}

//! Streaming scans: input arrives in chunks; secrets spanning chunk boundaries are found once.

use crate::finding::Finding;
use crate::scanner::{Scanner, WINDOW_BACK};

/// Context kept before the committed offset so rules see the bytes before a match.
const CONTEXT: usize = WINDOW_BACK * 4;

/// A streaming scan over one input (e.g. a request body). Created by [`Scanner::stream`].
///
/// Every finding is reported exactly once, with its absolute offset in the stream. A finding
/// is reported as soon as its start lies more than [`Scanner::overlap`] bytes before the end
/// of the data fed so far, so at most that many bytes are held back: a proxy may forward bytes
/// before [`StreamScan::committed`] once `feed` returned no blocking finding.
#[derive(Debug)]
pub struct StreamScan {
    scanner: Scanner,
    buf: Vec<u8>,
    /// Absolute offset of `buf[0]`.
    base: usize,
    /// Findings starting before this absolute offset have been reported.
    committed: usize,
    overlap: usize,
    finished: bool,
}

impl StreamScan {
    pub(crate) fn new(scanner: Scanner) -> Self {
        let overlap = scanner.overlap();
        StreamScan {
            scanner,
            buf: Vec::new(),
            base: 0,
            committed: 0,
            overlap,
            finished: false,
        }
    }

    /// Feeds the next chunk; returns findings that are now certain (see the type docs).
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Finding> {
        if self.finished {
            return Vec::new();
        }
        self.buf.extend_from_slice(chunk);
        let end = self.base + self.buf.len();
        let limit = end.saturating_sub(self.overlap);
        // Scan only once a meaningful amount of new data can be committed.
        if limit <= self.committed
            || (limit - self.committed < self.overlap / 4
                && !chunk.is_empty()
                && self.buf.len() < 4 * self.overlap)
        {
            return Vec::new();
        }
        self.scan_until(limit)
    }

    /// Ends the stream; returns the remaining findings.
    pub fn finish(&mut self) -> Vec<Finding> {
        if self.finished {
            return Vec::new();
        }
        self.finished = true;
        let end = self.base + self.buf.len();
        self.scan_until(end.max(self.committed + 1))
    }

    /// Absolute offset before which every finding has been reported: bytes before it are safe
    /// to forward if no blocking finding was returned.
    pub fn committed(&self) -> usize {
        self.committed
    }

    /// Total bytes fed so far.
    pub fn position(&self) -> usize {
        self.base + self.buf.len()
    }

    fn scan_until(&mut self, limit: usize) -> Vec<Finding> {
        let found = self.scanner.scan_at(&self.buf, self.base);
        let committed = self.committed;
        let out: Vec<Finding> = found
            .into_iter()
            .filter(|f| f.offset >= committed && f.offset < limit)
            .collect();
        self.committed = limit.min(self.base + self.buf.len()).max(self.committed);
        let keep_from = self.committed.saturating_sub(CONTEXT).max(self.base);
        self.buf.drain(..keep_from - self.base);
        self.base = keep_from;
        out
    }
}

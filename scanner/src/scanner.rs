//! The scanner: builder, keyword prefilter, windowed rule regexes, known secrets.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use regex_automata::Input;

use crate::error::RuleError;
use crate::finding::{redacted_preview, Finding};
use crate::keywords::KeywordSearch;
use crate::known::{KnownHit, KnownSet};
use crate::rules::{
    load_rules_file, parse_rules, shannon_entropy, Rule, DEFAULT_RULES_NAME, DEFAULT_RULES_TOML,
};
use crate::stream::StreamScan;

/// A keyword hit of the rule pass: `(start, end, keyword index)`.
pub(crate) type KeywordHit = (usize, usize, usize);

/// Rule id reported for the bottle's own known secrets.
pub const KNOWN_SECRET_RULE_ID: &str = "known-secret";

/// A rule regex runs on `[keyword - WINDOW_BACK, keyword end + WINDOW_FWD)` around each keyword
/// hit (look-around still sees the surrounding bytes). Rule matches must fit in this window.
pub(crate) const WINDOW_BACK: usize = 256;
pub(crate) const WINDOW_FWD: usize = 1024;

/// Builds a [`Scanner`]. See the crate docs for an example.
#[derive(Debug, Default)]
pub struct ScannerBuilder {
    default_rules: bool,
    rules: Vec<Rule>,
    disabled: Vec<String>,
    known: Vec<(String, Vec<u8>)>,
}

impl ScannerBuilder {
    /// Includes (or not) the built-in default ruleset. Off unless called with `true`.
    pub fn default_rules(mut self, yes: bool) -> Self {
        self.default_rules = yes;
        self
    }

    /// Adds the rules of a TOML rule file. Errors name the file, line and rule id.
    pub fn rules_file(mut self, path: impl AsRef<Path>) -> Result<Self, RuleError> {
        self.rules.extend(load_rules_file(path.as_ref())?);
        Ok(self)
    }

    /// Adds the rules of a TOML rule text; `name` is used in errors.
    pub fn rules_toml(mut self, name: &str, text: &str) -> Result<Self, RuleError> {
        self.rules.extend(parse_rules(text, name, false)?);
        Ok(self)
    }

    /// Disables rules by id. Checked at [`ScannerBuilder::build`]: unknown ids and core-floor
    /// rules are refused there (this only records the ids, so it can be called before
    /// `default_rules`/`rules_file`). Returns `Result` for API stability.
    pub fn disable<S: AsRef<str>>(mut self, ids: &[S]) -> Result<Self, RuleError> {
        for id in ids {
            let id = id.as_ref();
            if id.is_empty() {
                return Err(RuleError::UnknownRule { id: String::new() });
            }
            self.disabled.push(id.to_string());
        }
        Ok(self)
    }

    /// Adds one of the bottle's own secrets (an injected token, the CA private key...). It is
    /// found raw and encoded; findings carry `name`, never the value. Values shorter than 8
    /// bytes are refused at `build`.
    pub fn known_secret(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.known.push((name.into(), value.as_ref().to_vec()));
        self
    }

    /// Compiles everything into a [`Scanner`].
    pub fn build(self) -> Result<Scanner, RuleError> {
        let mut rules = Vec::new();
        if self.default_rules {
            rules.extend(parse_rules(DEFAULT_RULES_TOML, DEFAULT_RULES_NAME, true)?);
        }
        rules.extend(self.rules);
        // Duplicate ids.
        for (i, r) in rules.iter().enumerate() {
            if let Some(first) = rules[..i].iter().find(|p| p.id == r.id) {
                return Err(RuleError::Duplicate {
                    id: r.id.clone(),
                    first: first.source.clone(),
                    second: r.source.clone(),
                });
            }
        }
        for id in &self.disabled {
            match rules.iter().find(|r| &r.id == id) {
                None => return Err(RuleError::UnknownRule { id: id.clone() }),
                Some(r) if r.core => return Err(RuleError::CoreRule { id: id.clone() }),
                Some(_) => {}
            }
        }
        rules.retain(|r| !self.disabled.contains(&r.id));
        let known = KnownSet::new(&self.known)?;
        let prefilter = Prefilter::new(&rules)?;
        let mut scanner = Scanner {
            inner: Arc::new(Inner {
                rules,
                prefilter,
                known,
                common_clean: [0; 2],
            }),
        };
        // Computed with the scanner itself (which does not read it); the `Arc` is unshared.
        let clean = crate::decode::common_clean(&scanner);
        if let Some(inner) = Arc::get_mut(&mut scanner.inner) {
            inner.common_clean = clean;
        }
        Ok(scanner)
    }
}

#[derive(Debug)]
struct Prefilter {
    search: Option<KeywordSearch>,
    /// keyword index -> (rule index, keyword bytes if case-sensitive)
    targets: Vec<Vec<(usize, Option<Vec<u8>>)>>,
    /// Bytes (both ASCII cases) that occur in some keyword.
    keyword_bytes: [bool; 256],
}

impl Prefilter {
    fn new(rules: &[Rule]) -> Result<Self, RuleError> {
        let mut keywords: Vec<Vec<u8>> = Vec::new();
        let mut targets: Vec<Vec<(usize, Option<Vec<u8>>)>> = Vec::new();
        for (ri, r) in rules.iter().enumerate() {
            for k in &r.keywords {
                let lower = k.to_ascii_lowercase().into_bytes();
                let idx = match keywords.iter().position(|x| *x == lower) {
                    Some(i) => i,
                    None => {
                        keywords.push(lower);
                        targets.push(Vec::new());
                        keywords.len() - 1
                    }
                };
                let exact = r.case_sensitive_keywords.then(|| k.as_bytes().to_vec());
                targets[idx].push((ri, exact));
            }
        }
        let search = (!keywords.is_empty()).then(|| KeywordSearch::new(&keywords));
        let mut keyword_bytes = [false; 256];
        for k in &keywords {
            for &b in k {
                keyword_bytes[b.to_ascii_lowercase() as usize] = true;
                keyword_bytes[b.to_ascii_uppercase() as usize] = true;
            }
        }
        Ok(Prefilter {
            search,
            targets,
            keyword_bytes,
        })
    }
}

#[derive(Debug)]
struct Inner {
    rules: Vec<Rule>,
    prefilter: Prefilter,
    known: KnownSet,
    /// Which common header names / values scan clean (see [`Scanner::common_clean`]).
    common_clean: [u128; 2],
}

/// A compiled secret scanner: rules + keyword prefilter + known secrets. Cheap to clone (an
/// `Arc` inside), `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Scanner {
    inner: Arc<Inner>,
}

/// Id, description and core flag of a loaded rule (see [`Scanner::rules`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleInfo {
    /// Rule id.
    pub id: String,
    /// Description.
    pub description: String,
    /// Part of the core floor (cannot be disabled).
    pub core: bool,
    /// Where the rule comes from.
    pub source: String,
}

#[derive(Debug)]
struct Raw {
    rule: Option<usize>,
    known: Option<usize>,
    start: usize,
    end: usize,
    preview: String,
    encoding: Option<String>,
}

impl Scanner {
    /// Starts building a scanner.
    pub fn builder() -> ScannerBuilder {
        ScannerBuilder::default()
    }

    /// The ids of all enabled rules.
    pub fn rule_ids(&self) -> Vec<String> {
        self.inner.rules.iter().map(|r| r.id.clone()).collect()
    }

    /// Details of all enabled rules.
    pub fn rules(&self) -> Vec<RuleInfo> {
        self.inner
            .rules
            .iter()
            .map(|r| RuleInfo {
                id: r.id.clone(),
                description: r.description.clone(),
                core: r.core,
                source: r.source.clone(),
            })
            .collect()
    }

    /// Names of the known secrets.
    pub fn known_secret_names(&self) -> &[String] {
        &self.inner.known.names
    }

    /// Bytes a stream scan holds back so that secrets spanning chunk boundaries are found.
    pub fn overlap(&self) -> usize {
        4096usize.max(3 * self.inner.known.max_len + 64)
    }

    /// Scans one complete input. Findings are sorted by offset; offsets are relative to `data`.
    pub fn scan(&self, data: &[u8]) -> Vec<Finding> {
        self.scan_at(data, 0)
    }

    /// Scans `data` and sets `location` on every finding.
    pub fn scan_located(&self, data: &[u8], location: &str) -> Vec<Finding> {
        let found = self.scan(data);
        if found.is_empty() {
            return found;
        }
        found
            .into_iter()
            .map(|f| f.at(location.to_string()))
            .collect()
    }

    /// Appends what [`Scanner::scan`] returns for `data` to `out` (no location set). Allocates
    /// nothing when there is no finding.
    pub(crate) fn scan_append(&self, data: &[u8], out: &mut Vec<Finding>) {
        let found = self.scan(data);
        if !found.is_empty() {
            out.extend(found);
        }
    }

    /// Starts a streaming scan (see [`StreamScan`]).
    pub fn stream(&self) -> StreamScan {
        StreamScan::new(self.clone())
    }

    /// Scans `data`, adding `base` to every offset.
    pub(crate) fn scan_at(&self, data: &[u8], base: usize) -> Vec<Finding> {
        self.scan_parts(data, base, true, None, &mut true)
    }

    /// Like [`Scanner::scan`], and also returns all keyword hits (sorted by start):
    /// a sub-range of `data` without a keyword hit inside it yields no rule finding when
    /// scanned on its own.
    /// The third value is true when the known-secret view decoded escapes (or `data` is too
    /// short for any known secret).
    pub(crate) fn scan_with_keyword_spans(
        &self,
        data: &[u8],
    ) -> (Vec<Finding>, Vec<KeywordHit>, bool) {
        let mut spans = Vec::new();
        let mut decoded = true;
        let f = self.scan_parts(data, 0, true, Some(&mut spans), &mut decoded);
        spans.sort_unstable();
        (f, spans, decoded)
    }

    /// What [`Scanner::scan_located`] returns for `data`, given *every* keyword hit in `data`
    /// (offsets relative to `data`, as [`Scanner::scan_with_keyword_spans`] reports them, e.g.
    /// mapped from a scan of an enclosing buffer): the keyword search is skipped. `known =
    /// false` also skips the known-secret pass, for callers that know it finds nothing.
    pub(crate) fn scan_located_with_hits(
        &self,
        data: &[u8],
        hits: &[KeywordHit],
        location: &str,
        known: bool,
    ) -> Vec<Finding> {
        let mut raws = Vec::new();
        let mut windows = Vec::new();
        for &(start, end, ki) in hits {
            self.push_windows(data, ki, start, end, &mut windows);
        }
        self.run_windows(data, windows, &mut raws);
        if known {
            self.known_pass(data, &mut raws);
        }
        self.resolve(raws, 0)
            .into_iter()
            .map(|f| f.at(location.to_string()))
            .collect()
    }

    /// Only the known-secret pass of [`Scanner::scan_located`]: what `scan_located` returns for
    /// `data` when it holds no keyword hit.
    pub(crate) fn scan_known_located(&self, data: &[u8], location: &str) -> Vec<Finding> {
        self.scan_parts(data, 0, false, None, &mut true)
            .into_iter()
            .map(|f| f.at(location.to_string()))
            .collect()
    }

    /// True when byte `b` (in either ASCII case) occurs in some rule keyword.
    pub(crate) fn is_keyword_byte(&self, b: u8) -> bool {
        self.inner.prefilter.keyword_bytes[b as usize]
    }

    /// Bit `i` of `[0]` (`[1]`) is set when the `i`-th common header name (value) of
    /// `decode::url` yields no finding as a header name (value) in `scan_headers`.
    pub(crate) fn common_clean(&self) -> [u128; 2] {
        self.inner.common_clean
    }

    /// True when there are known secrets to look for.
    pub(crate) fn has_known(&self) -> bool {
        !self.inner.known.is_empty()
    }

    fn scan_parts(
        &self,
        data: &[u8],
        base: usize,
        rules: bool,
        spans: Option<&mut Vec<KeywordHit>>,
        known_view_decoded: &mut bool,
    ) -> Vec<Finding> {
        let mut raws = Vec::new();
        if rules {
            self.rule_pass(data, &mut raws, spans);
        }
        *known_view_decoded = self.known_pass(data, &mut raws);
        if raws.is_empty() {
            return Vec::new();
        }
        self.resolve(raws, base)
    }

    /// The known-secret pass; returns what [`KnownSet::scan`] does (true without known secrets).
    fn known_pass(&self, data: &[u8], raws: &mut Vec<Raw>) -> bool {
        if self.inner.known.is_empty() {
            return true;
        }
        let mut hits: Vec<KnownHit> = Vec::new();
        let decoded = self.inner.known.scan(data, &mut hits);
        for h in hits {
            raws.push(Raw {
                rule: None,
                known: Some(h.secret),
                start: h.start,
                end: h.end,
                preview: self.inner.known.names[h.secret].clone(),
                encoding: Some(h.encoding),
            });
        }
        decoded
    }

    fn rule_pass(&self, data: &[u8], out: &mut Vec<Raw>, mut spans: Option<&mut Vec<KeywordHit>>) {
        let Some(search) = &self.inner.prefilter.search else {
            return;
        };
        // (rule, window start, window end)
        let mut windows: Vec<(usize, usize, usize)> = Vec::new();
        search.find(data, |ki, start, end| {
            if let Some(sp) = spans.as_deref_mut() {
                sp.push((start, end, ki));
            }
            self.push_windows(data, ki, start, end, &mut windows);
        });
        self.run_windows(data, windows, out);
    }

    /// The regex windows `(rule, start, end)` of keyword `ki` found at `data[start..end]`.
    fn push_windows(
        &self,
        data: &[u8],
        ki: usize,
        start: usize,
        end: usize,
        windows: &mut Vec<(usize, usize, usize)>,
    ) {
        for (ri, exact) in &self.inner.prefilter.targets[ki] {
            if let Some(exact) = exact {
                if &data[start..end] != exact.as_slice() {
                    continue;
                }
            }
            if self.inner.rules[*ri].assignment {
                if let Some((ws, we)) = assignment_window(data, start) {
                    windows.push((*ri, ws, we));
                }
                continue;
            }
            let mut ws = start.saturating_sub(WINDOW_BACK);
            if let Some(nl) = memchr::memchr(b'\n', &data[ws..start]) {
                ws += nl + 1;
            }
            let we = (end + WINDOW_FWD).min(data.len());
            windows.push((*ri, ws, we));
        }
    }

    /// Runs each rule on its merged windows.
    fn run_windows(
        &self,
        data: &[u8],
        mut windows: Vec<(usize, usize, usize)>,
        out: &mut Vec<Raw>,
    ) {
        if windows.is_empty() {
            return;
        }
        windows.sort_unstable();
        let mut i = 0;
        while i < windows.len() {
            let (ri, ws, mut we) = windows[i];
            i += 1;
            while i < windows.len() && windows[i].0 == ri && windows[i].1 <= we {
                we = we.max(windows[i].2);
                i += 1;
            }
            self.run_rule(ri, data, ws, we, out);
        }
    }

    fn run_rule(&self, ri: usize, data: &[u8], ws: usize, we: usize, out: &mut Vec<Raw>) {
        let rule = &self.inner.rules[ri];
        let input = Input::new(data).range(ws..we);
        for caps in rule.regex.captures_iter(input) {
            let Some(whole) = caps.get_match() else {
                continue;
            };
            let span = match rule.secret_group {
                Some(g) => caps.get_group(g),
                None => (1..caps.group_len())
                    .filter_map(|g| caps.get_group(g))
                    .find(|s| !s.is_empty())
                    .or(Some(whole.span())),
            };
            let Some(span) = span else { continue };
            if span.is_empty() {
                continue;
            }
            let secret = &data[span.start..span.end];
            if let Some(min) = rule.entropy {
                if shannon_entropy(secret) < min {
                    continue;
                }
            }
            let whole_bytes = &data[whole.start()..whole.end()];
            let line_start = memchr::memrchr(b'\n', &data[..whole.start()])
                .map(|p| p + 1)
                .unwrap_or(0);
            let line_end = memchr::memchr(b'\n', &data[whole.end()..])
                .map(|p| whole.end() + p)
                .unwrap_or(data.len());
            let line = &data[line_start..line_end];
            if rule.file_allowlist.allows(secret, whole_bytes, line)
                || rule.allowlist.allows(secret, whole_bytes, line)
            {
                continue;
            }
            out.push(Raw {
                rule: Some(ri),
                known: None,
                start: span.start,
                end: span.end,
                preview: redacted_preview(secret),
                encoding: None,
            });
        }
    }

    /// Deduplicates, lets specific findings win over overlapping generic ones (known secrets
    /// win over both), sorts by offset and converts to [`Finding`]s.
    fn resolve(&self, mut raws: Vec<Raw>, base: usize) -> Vec<Finding> {
        if raws.is_empty() {
            return Vec::new();
        }
        let prio = |r: &Raw| -> u8 {
            match (r.known, r.rule) {
                (Some(_), _) => 3,
                (None, Some(ri)) if !self.inner.rules[ri].generic => 2,
                _ => 1,
            }
        };
        raws.sort_by_key(|r| (std::cmp::Reverse(prio(r)), r.start, r.end));
        let mut kept: Vec<Raw> = Vec::with_capacity(raws.len());
        let mut seen = BTreeSet::new();
        for r in raws {
            if !seen.insert((r.rule, r.known, r.start, r.end)) {
                continue;
            }
            let p = prio(&r);
            // Specific beats generic, known beats both; of overlapping generic findings of
            // different rules only the first (by position) is kept.
            if kept.iter().any(|k| {
                let pk = prio(k);
                (pk > p || (p == 1 && pk == 1 && k.rule != r.rule))
                    && r.start < k.end
                    && k.start < r.end
            }) {
                continue;
            }
            kept.push(r);
        }
        kept.sort_by_key(|r| (r.start, r.end));
        kept.into_iter()
            .map(|r| {
                let (rule_id, description) = match r.rule {
                    Some(ri) => {
                        let rule = &self.inner.rules[ri];
                        (rule.id.clone(), rule.description.clone())
                    }
                    None => (
                        KNOWN_SECRET_RULE_ID.to_string(),
                        "one of this bottle's own secrets".to_string(),
                    ),
                };
                Finding {
                    rule_id,
                    description,
                    offset: base + r.start,
                    len: r.end - r.start,
                    preview: r.preview,
                    known_secret: r.known.map(|k| self.inner.known.names[k].clone()),
                    encoding: r.encoding,
                    location: None,
                }
            })
            .collect()
    }
}

/// A byte of a name in an assignment (`[A-Za-z0-9_.-]`).
fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// A byte of an assigned value (`[A-Za-z0-9+/_.~!@#%^*=-]`).
fn value_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'+' | b'/'
                | b'_'
                | b'.'
                | b'~'
                | b'!'
                | b'@'
                | b'#'
                | b'%'
                | b'^'
                | b'*'
                | b'='
                | b'-'
        )
}

/// `\s` without Unicode.
fn space_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

/// The minimum value length of an `assignment` rule.
const ASSIGNMENT_MIN_VALUE: usize = 16;

/// For a rule with `assignment = true`: the window `(start, end)` its regex needs around the
/// keyword hit starting at `hit`, or `None` when no match can have the hit in its name. The
/// shape checked is a superset of what such a rule matches (see `rules.rs`): the name (the
/// run of name bytes around the hit, starting at most [`WINDOW_BACK`] bytes back), at most two
/// of `` *`"' ``, whitespace, `=`, `:` or `|` (optionally followed by `=` or `>`),
/// whitespace, at most one quote, and at least 16 value bytes ending within
/// [`WINDOW_FWD`] bytes. The window starts 3 bytes before the name (quotes and the byte before
/// them), not before its line, and ends one byte after the quote and whitespace that follow
/// the value.
pub(crate) fn assignment_window(data: &[u8], hit: usize) -> Option<(usize, usize)> {
    let floor = hit.saturating_sub(WINDOW_BACK);
    let mut ns = hit;
    while ns > floor && name_byte(data[ns - 1]) {
        ns -= 1;
    }
    if ns == floor && floor > 0 && name_byte(data[ns - 1]) {
        return None;
    }
    let cap = (hit + WINDOW_FWD).min(data.len());
    let mut e = hit;
    while e < cap && name_byte(data[e]) {
        e += 1;
    }
    let mut quotes = 0;
    while quotes < 2 && e < cap && matches!(data[e], b'*' | b'`' | b'"' | b'\'') {
        e += 1;
        quotes += 1;
    }
    while e < cap && space_byte(data[e]) {
        e += 1;
    }
    if e >= cap || !matches!(data[e], b'=' | b':' | b'|') {
        return None;
    }
    let value_end = |mut p: usize| -> Option<usize> {
        while p < cap && space_byte(data[p]) {
            p += 1;
        }
        if p < cap && matches!(data[p], b'`' | b'"' | b'\'') {
            p += 1;
        }
        let v = p;
        while p < cap && value_byte(data[p]) {
            p += 1;
        }
        (p - v >= ASSIGNMENT_MIN_VALUE && (p < cap || p == data.len())).then_some(p)
    };
    let mut end = value_end(e + 1);
    if end.is_none() && e + 1 < cap && matches!(data[e + 1], b'=' | b'>') {
        end = value_end(e + 2);
    }
    // What may follow the value: a quote, whitespace (also line ends: a Markdown cell's
    // closing `|` may be on the next line) and one more byte.
    let mut we = end?;
    let stop = (we + 256).min(data.len());
    if we < stop && matches!(data[we], b'`' | b'"' | b'\'') {
        we += 1;
    }
    while we < stop && space_byte(data[we]) {
        we += 1;
    }
    let we = (we + 1).min(data.len());
    let mut ws = ns.saturating_sub(3);
    if let Some(nl) = memchr::memrchr(b'\n', &data[ws..ns]) {
        ws += nl + 1;
    }
    Some((ws, we))
}

//! Rule files: the TOML format, loading with precise errors, and compilation.
//!
//! One file per ruleset. The format is a small, strict subset of gitleaks v8:
//!
//! ```toml
//! title = "my rules"              # optional
//!
//! [allowlist]                     # optional, applies to every rule of this file
//! stopwords = ["example"]         # substrings (case-insensitive) of the secret that cancel a match
//! regexes = ['''^x+$''']          # regexes that cancel a match (see `regex_target`)
//!
//! [[rules]]
//! id = "acme-api-key"             # unique across all loaded files
//! description = "Acme API key"
//! regex = '''\b(acme_[A-Za-z0-9]{32})\b'''   # the first non-empty capture group is the secret
//! secret_group = 1                # optional: which group is the secret (alias: secretGroup)
//! keywords = ["acme_"]            # required: case-insensitive prefilter strings (>= 2 bytes)
//! case_sensitive_keywords = false # optional: keyword hits must match case exactly
//! entropy = 3.5                   # optional: minimum Shannon entropy (bits/byte) of the secret
//! tags = ["generic"]              # optional; "generic" rules yield to specific rules on overlap
//! assignment = false              # optional: see below
//! [rules.allowlist]               # optional, same fields as the file allowlist plus:
//! regex_target = "secret"         # "secret" (default), "match" or "line"
//! ```
//!
//! `assignment = true` is for rules whose matches are `NAME <op> VALUE` with the keyword inside
//! `NAME` (`[A-Za-z0-9_.-]*`), then at most two of `` *`"' ``, whitespace, an operator byte
//! (`=`, `:` or `|`), whitespace, at most one quote, and a value of at least 16 bytes of
//! `[A-Za-z0-9+/_.~!@#%^*=-]`: the regex then runs only on keyword hits in that shape, on a
//! window from just before `NAME` to just after the value, instead of the usual
//! `[hit - 256, hit + 1024)` (a hand-written check, far cheaper than running the regex there).
//!
//! Unknown keys, bad regexes, missing keywords and duplicate ids are refused with the file,
//! line and rule id. Regexes are compiled with `regex::bytes` and Unicode classes off (`\w`,
//! `\s`, `\d` are ASCII), which keeps them fast.

use std::path::Path;

use regex::bytes::{Regex, RegexBuilder};
use regex_automata::meta::Regex as MetaRegex;
use regex_automata::util::syntax;
use serde::Deserialize;

use crate::error::RuleError;

/// The built-in default ruleset (`scanner/rules/default.toml`).
pub const DEFAULT_RULES_TOML: &str = include_str!("../rules/default.toml");
/// Name used for the built-in ruleset in error messages.
pub const DEFAULT_RULES_NAME: &str = "<built-in default.toml>";

/// Regex program size cap (per rule), to refuse pathological patterns at load time.
const REGEX_SIZE_LIMIT: usize = 2 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFileSpec {
    #[allow(dead_code)]
    title: Option<String>,
    #[serde(default)]
    allowlist: Option<AllowlistSpec>,
    #[serde(default)]
    rules: Vec<toml::Spanned<RuleSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    #[serde(default)]
    description: String,
    regex: String,
    #[serde(default, alias = "secretGroup")]
    secret_group: Option<usize>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    case_sensitive_keywords: bool,
    #[serde(default)]
    entropy: Option<f64>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    core: bool,
    #[serde(default)]
    assignment: bool,
    #[serde(default)]
    allowlist: Option<AllowlistSpec>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct AllowlistSpec {
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(default)]
    stopwords: Vec<String>,
    #[serde(default, alias = "regexTarget")]
    regex_target: Option<String>,
}

/// What an allowlist regex is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegexTarget {
    Secret,
    Match,
    Line,
}

/// A compiled allowlist.
#[derive(Debug, Clone)]
pub(crate) struct Allowlist {
    pub regexes: Vec<Regex>,
    pub stopwords: Vec<Vec<u8>>,
    pub target: RegexTarget,
}

impl Allowlist {
    fn empty() -> Self {
        Allowlist {
            regexes: Vec::new(),
            stopwords: Vec::new(),
            target: RegexTarget::Secret,
        }
    }

    /// True when this allowlist cancels the match.
    pub fn allows(&self, secret: &[u8], whole: &[u8], line: &[u8]) -> bool {
        if !self.stopwords.is_empty() {
            let lower = secret.to_ascii_lowercase();
            if self
                .stopwords
                .iter()
                .any(|w| memchr::memmem::find(&lower, w).is_some())
            {
                return true;
            }
        }
        let target = match self.target {
            RegexTarget::Secret => secret,
            RegexTarget::Match => whole,
            RegexTarget::Line => line,
        };
        self.regexes.iter().any(|r| r.is_match(target))
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub id: String,
    pub description: String,
    pub regex: MetaRegex,
    pub secret_group: Option<usize>,
    pub keywords: Vec<String>,
    /// Keyword hits must match the keyword's case exactly.
    pub case_sensitive_keywords: bool,
    pub entropy: Option<f64>,
    pub core: bool,
    pub generic: bool,
    /// Windows only around keyword hits in a `NAME <op> VALUE` shape (see the module docs).
    pub assignment: bool,
    pub allowlist: Allowlist,
    /// The allowlist of the file the rule came from.
    pub file_allowlist: Allowlist,
    /// Where the rule was defined (file name), for `rule_ids` listings and errors.
    pub source: String,
}

fn line_of(text: &str, byte: usize) -> usize {
    text.as_bytes()[..byte.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Best-effort: the id of the `[[rules]]` entry that contains byte `at`.
fn rule_id_near(text: &str, at: usize) -> String {
    let head = &text[..at.min(text.len())];
    let Some(start) = head.rfind("[[rules]]") else {
        return "-".to_string();
    };
    let rest = &text[start..];
    let end = rest[9..]
        .find("[[rules]]")
        .map(|e| e + 9)
        .unwrap_or(rest.len());
    for line in rest[..end].lines() {
        let l = line.trim_start();
        if let Some(v) = l.strip_prefix("id") {
            let v = v.trim_start();
            if let Some(v) = v.strip_prefix('=') {
                return v.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
            }
        }
    }
    "-".to_string()
}

fn compile_regex(
    pat: &str,
    file: &str,
    line: usize,
    rule: &str,
    what: &str,
) -> Result<Regex, RuleError> {
    RegexBuilder::new(pat)
        .unicode(false)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| RuleError::Invalid {
            file: file.to_string(),
            line,
            rule: rule.to_string(),
            message: format!("invalid {what}: {e}"),
        })
}

/// Compiles a rule regex as a `regex_automata` meta regex, so searches can be restricted to a
/// window of the input while `^`, `$` and `\b` still see the bytes around the window.
fn compile_rule_regex(
    pat: &str,
    file: &str,
    line: usize,
    rule: &str,
) -> Result<MetaRegex, RuleError> {
    MetaRegex::builder()
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .configure(
            MetaRegex::config()
                .nfa_size_limit(Some(REGEX_SIZE_LIMIT))
                .hybrid_cache_capacity(REGEX_SIZE_LIMIT)
                .utf8_empty(false),
        )
        .build(pat)
        .map_err(|e| RuleError::Invalid {
            file: file.to_string(),
            line,
            rule: rule.to_string(),
            // The syntax error says what and where in the pattern; the build error alone only
            // says "error parsing pattern 0".
            message: match e.syntax_error() {
                Some(se) => format!(
                    "invalid regex: {}",
                    se.to_string()
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                None => format!("invalid regex: {e}"),
            },
        })
}

fn compile_allowlist(
    spec: Option<&AllowlistSpec>,
    file: &str,
    line: usize,
    rule: &str,
) -> Result<Allowlist, RuleError> {
    let Some(spec) = spec else {
        return Ok(Allowlist::empty());
    };
    let target = match spec.regex_target.as_deref() {
        None | Some("secret") => RegexTarget::Secret,
        Some("match") => RegexTarget::Match,
        Some("line") => RegexTarget::Line,
        Some(other) => {
            return Err(RuleError::Invalid {
                file: file.to_string(),
                line,
                rule: rule.to_string(),
                message: format!(
                "allowlist.regex_target = {other:?} is not one of \"secret\", \"match\", \"line\""
            ),
            })
        }
    };
    let mut regexes = Vec::new();
    for r in &spec.regexes {
        regexes.push(compile_regex(r, file, line, rule, "allowlist regex")?);
    }
    Ok(Allowlist {
        regexes,
        stopwords: spec
            .stopwords
            .iter()
            .map(|s| s.to_ascii_lowercase().into_bytes())
            .collect(),
        target,
    })
}

/// Parses and compiles one rule file's text. `name` is used in errors; `builtin` allows `core`.
pub(crate) fn parse_rules(text: &str, name: &str, builtin: bool) -> Result<Vec<Rule>, RuleError> {
    let spec: RuleFileSpec = toml::from_str(text).map_err(|e| {
        let at = e.span().map(|s| s.start).unwrap_or(0);
        RuleError::Invalid {
            file: name.to_string(),
            line: line_of(text, at),
            rule: rule_id_near(text, at),
            message: e.message().to_string(),
        }
    })?;
    let file_allow = compile_allowlist(spec.allowlist.as_ref(), name, 1, "-")?;
    let mut out = Vec::with_capacity(spec.rules.len());
    for spanned in spec.rules {
        let line = line_of(text, spanned.span().start);
        let r = spanned.into_inner();
        let err = |message: String| RuleError::Invalid {
            file: name.to_string(),
            line,
            rule: r.id.clone(),
            message,
        };
        if r.id.is_empty()
            || !r
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(err(
                "id must be non-empty and use only letters, digits, '-', '_', '.'".into(),
            ));
        }
        if r.core && !builtin {
            return Err(err(
                "`core` is reserved for the built-in ruleset; remove it from this file".into(),
            ));
        }
        if r.keywords.is_empty() {
            return Err(err(
                "no keywords: every rule needs at least one keyword (the prefilter runs a rule's regex only near its keywords)".into(),
            ));
        }
        if let Some(k) = r.keywords.iter().find(|k| k.len() < 2) {
            return Err(err(format!(
                "keyword {k:?} is shorter than 2 bytes; use a longer, rarer keyword"
            )));
        }
        if let Some(e) = r.entropy {
            if !(0.0..=8.0).contains(&e) {
                return Err(err(format!(
                    "entropy = {e} is outside 0.0..=8.0 bits per byte"
                )));
            }
        }
        let regex = compile_rule_regex(&r.regex, name, line, &r.id)?;
        let groups = regex
            .group_info()
            .group_len(regex_automata::PatternID::ZERO);
        if let Some(g) = r.secret_group {
            if g >= groups {
                return Err(err(format!(
                    "secret_group = {g} but the regex has only {} capture group(s)",
                    groups - 1
                )));
            }
        }
        let allowlist = compile_allowlist(r.allowlist.as_ref(), name, line, &r.id)?;
        out.push(Rule {
            generic: r.tags.iter().any(|t| t == "generic"),
            id: r.id,
            description: r.description,
            regex,
            secret_group: r.secret_group,
            keywords: r.keywords.clone(),
            case_sensitive_keywords: r.case_sensitive_keywords,
            entropy: r.entropy,
            core: r.core,
            assignment: r.assignment,
            allowlist,
            file_allowlist: file_allow.clone(),
            source: name.to_string(),
        });
    }
    Ok(out)
}

/// Reads and compiles a rule file from disk.
pub(crate) fn load_rules_file(path: &Path) -> Result<Vec<Rule>, RuleError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| RuleError::Io {
        file: name.clone(),
        message: e.to_string(),
    })?;
    parse_rules(&text, &name, false)
}

/// Shannon entropy of `data` in bits per byte.
pub fn shannon_entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let n = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_compile() {
        let rules = parse_rules(DEFAULT_RULES_TOML, DEFAULT_RULES_NAME, true).unwrap();
        assert!(rules.len() >= 60, "only {} rules", rules.len());
    }

    #[test]
    fn unknown_key_names_line_and_rule() {
        let t = "[[rules]]\nid = \"a-b\"\nregex = 'x'\nkeywords = [\"abc\"]\nbogus = 1\n";
        let e = parse_rules(t, "f.toml", false).unwrap_err().to_string();
        assert!(e.contains("f.toml:5"), "{e}");
        assert!(e.contains("a-b"), "{e}");
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn bad_regex_names_line_and_rule() {
        let t = "title = 'x'\n\n[[rules]]\nid = \"bad-one\"\nregex = '(unclosed'\nkeywords = [\"abc\"]\n";
        let e = parse_rules(t, "f.toml", false).unwrap_err().to_string();
        assert!(e.contains("f.toml:3"), "{e}");
        assert!(e.contains("bad-one"), "{e}");
        assert!(e.contains("invalid regex"), "{e}");
    }

    #[test]
    fn missing_keywords_and_core_refused() {
        let t = "[[rules]]\nid = \"k\"\nregex = 'x'\n";
        assert!(parse_rules(t, "f", false)
            .unwrap_err()
            .to_string()
            .contains("no keywords"));
        let t = "[[rules]]\nid = \"k\"\nregex = 'x'\nkeywords=['abc']\ncore = true\n";
        assert!(parse_rules(t, "f", false)
            .unwrap_err()
            .to_string()
            .contains("reserved"));
    }

    #[test]
    fn entropy_values() {
        assert_eq!(shannon_entropy(b"aaaa"), 0.0);
        assert!((shannon_entropy(b"abcd") - 2.0).abs() < 1e-9);
    }
}

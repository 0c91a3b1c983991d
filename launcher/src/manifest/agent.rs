//! Agent files: Markdown with TOML front matter between `+++` lines.
//!
//! The front matter picks a bottle and may add non-secret settings; the body is the agent's
//! system prompt. Agents come from `$BOTTLE_HOME/agents/` (trusted) and from
//! `<repo>/.bottle/agents/` (untrusted: a cloned repository), so an agent can never add
//! routes, secrets, git remotes or proxy settings — those keys are refused by name.
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::bottle::{check_env_name, check_env_value};
use super::error::{Location, ManifestError};
use super::source::SourceFile;

/// Where an agent file was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentOrigin {
    /// `$BOTTLE_HOME/agents/<name>.md`.
    Home,
    /// `<repo>/.bottle/agents/<name>.md`.
    Repo,
    /// No agent file: a bottle of the same name (or a built-in) used directly.
    Implicit,
    /// An `[[agent]]` of a gemba `agents.toml` outside the workspace (`bottle spawn --gemba`).
    Gemba,
}

/// Keys only a bottle may set; an agent using one gets a pointed error.
const BOTTLE_ONLY_KEYS: &[&str] = &[
    "route",
    "routes",
    "secrets",
    "secret",
    "remote",
    "remotes",
    "proxy",
    "image",
    "workspace",
    "protect_git",
    "resources",
    "runtime",
    "model",
    "models",
    "extends",
    "auth",
];

/// Colour names accepted for `color` (plus `#rrggbb`).
pub const COLOURS: &[&str] = &[
    "black",
    "red",
    "green",
    "yellow",
    "blue",
    "magenta",
    "cyan",
    "white",
    "bright-black",
    "bright-red",
    "bright-green",
    "bright-yellow",
    "bright-blue",
    "bright-magenta",
    "bright-cyan",
    "bright-white",
];

/// Longest accepted `label`, in bytes.
pub const MAX_LABEL: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgentGit {
    author_name: Option<String>,
    author_email: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    bottle: Option<Spanned<String>>,
    /// Accepted for compatibility with Claude Code subagent files; the file name is the name.
    #[allow(dead_code)]
    name: Option<String>,
    description: Option<String>,
    label: Option<Spanned<String>>,
    #[serde(alias = "colour")]
    color: Option<Spanned<String>>,
    git: Option<RawAgentGit>,
    command: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
}

/// A parsed, validated agent file.
#[derive(Debug)]
pub(crate) struct AgentDoc {
    pub origin: AgentOrigin,
    pub src: Arc<SourceFile>,
    /// The bottle named in the front matter, with its span.
    pub bottle: Option<(String, Range<usize>)>,
    pub description: Option<String>,
    pub label: Option<String>,
    pub color: Option<String>,
    pub author_name: Option<String>,
    pub author_email: Option<String>,
    pub command: Option<Vec<String>>,
    pub env: Vec<(String, String, Range<usize>)>,
    pub prompt: String,
    /// SHA-256 (hex) of the file's bytes as read (set by the loader; empty when parsed from a
    /// string).
    pub sha256: String,
}

impl AgentDoc {
    /// Location of the front matter's `bottle` key (or the file).
    pub fn bottle_loc(&self) -> Location {
        self.src.loc(self.bottle.as_ref().map(|(_, s)| s))
    }
}

/// Splits `+++`-delimited front matter from the body. Returns (front matter, its first line
/// number, body).
fn split_front_matter(text: &str) -> Option<(&str, usize, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let first_end = text.find('\n')?;
    if text[..first_end].trim_end() != "+++" {
        return None;
    }
    let rest = &text[first_end + 1..];
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "+++" {
            let front = &rest[..offset];
            let body = &rest[offset + line.len()..];
            return Some((front, 2, body));
        }
        offset += line.len();
    }
    None
}

/// Parses an agent file's text.
pub(crate) fn parse_agent(
    origin: AgentOrigin,
    path: PathBuf,
    display: String,
    text: &str,
) -> Result<AgentDoc, ManifestError> {
    let Some((front, line_base, body)) = split_front_matter(text) else {
        return Err(ManifestError::Syntax {
            loc: Location { path, display, line: Some(1) },
            message: "an agent file starts with a `+++` line, then TOML front matter (at least `bottle = \"name\"`), then a closing `+++` line, then the system prompt".into(),
        });
    };
    let src = Arc::new(SourceFile {
        path,
        display,
        text: front.to_string(),
        line_base,
    });
    let raw: RawAgent = match src.parse("agent front matter") {
        Ok(r) => r,
        Err(ManifestError::UnknownKey {
            loc, key, table, ..
        }) if BOTTLE_ONLY_KEYS.contains(&key.as_str())
            || (table.contains("git") && key.starts_with("remote")) =>
        {
            let where_ = match origin {
                AgentOrigin::Repo => "A repository agent",
                _ => "An agent",
            };
            return Err(ManifestError::UnknownKey {
                loc,
                key,
                table,
                suggestion: None,
                note: Some(format!(
                    "{where_} cannot set routes, secrets, git remotes, images or other bottle settings; put them in a bottle ($BOTTLE_HOME/bottles/<name>.toml) and name it with `bottle = \"<name>\"`"
                )),
            });
        }
        Err(e) => return Err(e),
    };
    let invalid = |span: Range<usize>, key: &str, message: String| ManifestError::Invalid {
        loc: src.loc(Some(&span)),
        key: key.into(),
        message,
        suggestion: None,
    };
    let label = match raw.label {
        Some(l) if l.get_ref().len() > MAX_LABEL || l.get_ref().chars().any(char::is_control) => {
            return Err(invalid(
                l.span(),
                "label",
                format!("a label is at most {MAX_LABEL} bytes without control characters"),
            ))
        }
        Some(l) => Some(l.into_inner()),
        None => None,
    };
    let color = match raw.color {
        Some(c) => {
            let v = c.get_ref().to_ascii_lowercase();
            let hex = v.len() == 7
                && v.starts_with('#')
                && v[1..].chars().all(|ch| ch.is_ascii_hexdigit());
            if !hex && !COLOURS.contains(&v.as_str()) {
                return Err(ManifestError::Invalid {
                    loc: src.loc(Some(&c.span())),
                    key: "color".into(),
                    message: format!("`{v}` is not one of the 16 terminal colours (e.g. `cyan`, `bright-red`) or `#rrggbb`"),
                    suggestion: super::suggest::did_you_mean(&v, COLOURS.iter().copied()),
                });
            }
            Some(v)
        }
        None => None,
    };
    let command = match raw.command {
        Some(c) if c.get_ref().is_empty() || c.get_ref()[0].trim().is_empty() => {
            return Err(invalid(
                c.span(),
                "command",
                "the command is empty; write e.g. command = [\"claude\"] or leave it out".into(),
            ))
        }
        Some(c) => Some(c.into_inner()),
        None => None,
    };
    let mut env = Vec::new();
    for (k, v) in raw.env {
        let span = v.span();
        check_env_name(&src, &span, &k)?;
        check_env_value(&src, &span, &k, v.get_ref())?;
        env.push((k, v.into_inner(), span));
    }
    let (author_name, author_email) = match raw.git {
        Some(g) => (g.author_name, g.author_email),
        None => (None, None),
    };
    Ok(AgentDoc {
        origin,
        bottle: raw.bottle.map(|b| {
            let span = b.span();
            (b.into_inner(), span)
        }),
        description: raw.description,
        label,
        color,
        author_name,
        author_email,
        command,
        env,
        prompt: body.trim().to_string(),
        sha256: String::new(),
        src,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_is_split() {
        let (front, base, body) =
            split_front_matter("+++\nbottle = \"x\"\n+++\n\nHello\n").unwrap();
        assert_eq!(front, "bottle = \"x\"\n");
        assert_eq!(base, 2);
        assert_eq!(body.trim(), "Hello");
        assert!(split_front_matter("bottle = 1\n").is_none());
        assert!(split_front_matter("+++\nbottle = 1\n").is_none());
    }
}

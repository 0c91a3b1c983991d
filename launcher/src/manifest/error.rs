//! The one error type of the manifest layer, and where in which file it happened.
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// A place in a manifest file: the path as shown to the user and, when known, a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// The file on disk (or a `<built-in …>` pseudo path).
    pub path: PathBuf,
    /// How the file is named in messages, e.g. `bottles/dev.toml` (relative to `$BOTTLE_HOME`).
    pub display: String,
    /// 1-based line number, when the problem can be pinned to a line.
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}", self.display, line),
            None => write!(f, "{}", self.display),
        }
    }
}

/// Formats an optional did-you-mean as `; did you mean `x`?`.
fn hint(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!("; did you mean `{s}`?"),
        None => String::new(),
    }
}

/// Formats optional extra advice as `. advice`.
fn advice(text: &Option<String>) -> String {
    match text {
        Some(s) => format!(". {s}"),
        None => String::new(),
    }
}

/// Everything that can go wrong loading, validating or resolving manifests.
///
/// Messages name the file (and line when known), the key, and what to do next. They never
/// contain a secret value: secret errors name the secret and its source only.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A manifest file or directory could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML itself is malformed (or the front matter markers are missing).
    #[error("{loc}: {message}")]
    Syntax {
        /// Where.
        loc: Location,
        /// What is wrong, and how to fix it.
        message: String,
    },
    /// A key that this table does not know.
    #[error(
        "{loc}: unknown key `{key}` in {table}{}{}",
        hint(suggestion),
        advice(note)
    )]
    UnknownKey {
        /// Where.
        loc: Location,
        /// The offending key.
        key: String,
        /// The table it appeared in, e.g. `bottle` or `[resources]`.
        table: String,
        /// The closest known key, if any is close.
        suggestion: Option<String>,
        /// Extra advice (e.g. why agents cannot set this key).
        note: Option<String>,
    },
    /// A value of the wrong TOML type.
    #[error("{loc}: wrong type for `{key}`: {message}")]
    WrongType {
        /// Where.
        loc: Location,
        /// The key whose value has the wrong type.
        key: String,
        /// What was found and what was expected.
        message: String,
    },
    /// A value of the right type that is not acceptable.
    #[error("{loc}: invalid value for `{key}`: {message}{}", hint(suggestion))]
    Invalid {
        /// Where.
        loc: Location,
        /// The key.
        key: String,
        /// Why, and what would be accepted.
        message: String,
        /// The closest accepted value, if any is close.
        suggestion: Option<String>,
    },
    /// A route or git remote names a secret the bottle does not declare.
    #[error(
        "{loc}: {used_by} uses secret `{name}`, which is not declared in [secrets] of bottle `{bottle}`{}",
        hint(suggestion)
    )]
    UnknownSecret {
        /// Where the reference is.
        loc: Location,
        /// The secret name referenced.
        name: String,
        /// What references it, e.g. ``route `github-api` ``.
        used_by: String,
        /// The bottle being resolved.
        bottle: String,
        /// The closest declared secret, if any is close.
        suggestion: Option<String>,
    },
    /// `extends` is wrong: self-reference, cycle, missing parent, too deep.
    #[error("{loc}: {message}{}", hint(suggestion))]
    Extends {
        /// Where the `extends` is.
        loc: Location,
        /// What is wrong.
        message: String,
        /// The closest existing bottle, if any is close.
        suggestion: Option<String>,
    },
    /// The proxy refused a route (or the assembled policy).
    #[error("{loc}: route `{route}` is refused by the proxy policy: {message}")]
    Route {
        /// Where the route is declared.
        loc: Location,
        /// The route id (or host).
        route: String,
        /// The proxy's reason.
        message: String,
    },
    /// No agent or bottle of that name exists.
    #[error(
        "no {what} named `{name}` (looked in {searched}){}{}",
        hint(suggestion),
        advice(note)
    )]
    NotFound {
        /// `agent` or `bottle`.
        what: &'static str,
        /// The name asked for.
        name: String,
        /// The places that were searched.
        searched: String,
        /// The closest existing name, if any is close.
        suggestion: Option<String>,
        /// What to do next.
        note: Option<String>,
    },
    /// A secret could not be resolved on the host. Never contains the value.
    #[error("secret `{name}` ({source_desc}): {message}")]
    Secret {
        /// The secret's name in the bottle.
        name: String,
        /// Where it comes from, e.g. `env:GH_TOKEN`.
        source_desc: String,
        /// What went wrong and what to do.
        message: String,
    },
}

impl ManifestError {
    /// The file location of the error, when it has one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ManifestError::Syntax { loc, .. }
            | ManifestError::UnknownKey { loc, .. }
            | ManifestError::WrongType { loc, .. }
            | ManifestError::Invalid { loc, .. }
            | ManifestError::UnknownSecret { loc, .. }
            | ManifestError::Extends { loc, .. }
            | ManifestError::Route { loc, .. } => Some(loc),
            ManifestError::Io { .. }
            | ManifestError::NotFound { .. }
            | ManifestError::Secret { .. } => None,
        }
    }
}

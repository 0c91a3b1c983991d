//! Errors of the scanner library. None of them ever contains a secret value.

use thiserror::Error;

/// An error building a [`crate::Scanner`]: loading rules, disabling rules, adding known secrets.
#[derive(Debug, Error)]
pub enum RuleError {
    /// A rule file could not be read.
    #[error("{file}: cannot read rules file: {message}")]
    Io {
        /// The file name.
        file: String,
        /// The OS error.
        message: String,
    },
    /// A rule file or one of its rules is invalid.
    #[error("{file}:{line}: rule `{rule}`: {message}")]
    Invalid {
        /// The file name (or `<built-in default.toml>`).
        file: String,
        /// 1-based line of the offending rule or key.
        line: usize,
        /// The rule id (`-` when unknown).
        rule: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Two loaded rules have the same id.
    #[error("rule `{id}` is defined twice ({first} and {second}); rename one of them")]
    Duplicate {
        /// The duplicated id.
        id: String,
        /// Where it was first defined.
        first: String,
        /// Where it was defined again.
        second: String,
    },
    /// `disable` named a core-floor rule.
    #[error("rule `{id}` is part of the core floor (cloud keys, git-host tokens, private keys) and cannot be disabled")]
    CoreRule {
        /// The rule id.
        id: String,
    },
    /// `disable` named a rule that is not loaded.
    #[error("cannot disable unknown rule `{id}`; list the loaded rule ids with `bottle scan --list-rules`")]
    UnknownRule {
        /// The rule id.
        id: String,
    },
    /// A known secret is unusable (never includes the value).
    #[error("known secret `{name}`: {message}")]
    KnownSecret {
        /// The secret's name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The keyword automaton could not be built.
    #[error("cannot build the keyword prefilter: {0}")]
    Prefilter(String),
}

//! The push ref policy: which ref updates a push may make.

use crate::config::PushPolicy;

/// The all-zero object id of a ref that does not exist (SHA-1 or SHA-256 length).
pub fn is_zero(oid: &str) -> bool {
    !oid.is_empty() && oid.bytes().all(|b| b == b'0')
}

/// One `<old> <new> <ref>` line a `pre-receive` hook reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefUpdate {
    /// The ref's current value in the mirror (= upstream at the advertisement), zeros if new.
    pub old: String,
    /// The pushed value, zeros for a delete.
    pub new: String,
    /// The full ref name.
    pub name: String,
}

impl RefUpdate {
    /// Parses one hook input line; `None` if it is not `<hex> <hex> refs/…`.
    pub fn parse(line: &str) -> Option<RefUpdate> {
        let mut it = line.trim_end_matches('\n').splitn(3, ' ');
        let (old, new, name) = (it.next()?, it.next()?, it.next()?);
        let hex =
            |s: &str| (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(old)
            || !hex(new)
            || !name.starts_with("refs/")
            || name.bytes().any(|b| b <= b' ' || b == 0x7f)
        {
            return None;
        }
        Some(RefUpdate {
            old: old.to_ascii_lowercase(),
            new: new.to_ascii_lowercase(),
            name: name.to_string(),
        })
    }

    /// Whether this update deletes the ref.
    pub fn is_delete(&self) -> bool {
        is_zero(&self.new)
    }

    /// Whether this update creates the ref.
    pub fn is_create(&self) -> bool {
        is_zero(&self.old)
    }
}

/// Matches `name` against a ref pattern where `*` matches any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn rec(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| rec(rest, &n[i..])),
            Some((c, rest)) => n.first() == Some(c) && rec(rest, &n[1..]),
        }
    }
    rec(pattern.as_bytes(), name.as_bytes())
}

/// Checks one update. `fast_forward` is asked only for an update of an existing ref to an
/// existing value and says whether `new` descends from `old`. The error is the reason shown
/// to the agent.
pub fn check(
    policy: &PushPolicy,
    update: &RefUpdate,
    fast_forward: impl FnOnce() -> bool,
) -> Result<(), String> {
    let name = &update.name;
    if !policy.push.iter().any(|p| glob_match(p, name)) {
        return Err(format!(
            "{name}: pushing this ref is not allowed (allowed: {})",
            policy.push.join(", ")
        ));
    }
    if name.starts_with("refs/tags/") && !policy.allow_tags {
        return Err(format!(
            "{name}: pushing tags is not allowed on this remote"
        ));
    }
    if update.is_delete() {
        if !policy.allow_delete {
            return Err(format!(
                "{name}: deleting refs is not allowed on this remote"
            ));
        }
        return Ok(());
    }
    if !update.is_create() && !fast_forward() {
        let in_namespace = policy.force_namespaces.iter().any(|p| glob_match(p, name));
        if !policy.allow_force && !in_namespace {
            return Err(format!(
                "{name}: non-fast-forward (force) pushes are not allowed here{}",
                if policy.force_namespaces.is_empty() {
                    String::new()
                } else {
                    format!(" (only in {})", policy.force_namespaces.join(", "))
                }
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const Z: &str = "0000000000000000000000000000000000000000";
    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    fn up(old: &str, new: &str, name: &str) -> RefUpdate {
        RefUpdate::parse(&format!("{old} {new} {name}\n")).unwrap()
    }

    #[test]
    fn parses_hook_lines_and_refuses_junk() {
        assert_eq!(up(A, B, "refs/heads/x").name, "refs/heads/x");
        assert!(RefUpdate::parse("zz 11 refs/heads/x").is_none());
        assert!(RefUpdate::parse(&format!("{A} {B} HEAD")).is_none());
        assert!(RefUpdate::parse(&format!("{A} {B} refs/heads/a\tb")).is_none());
    }

    #[test]
    fn globs() {
        assert!(glob_match("refs/heads/*", "refs/heads/a/b"));
        assert!(!glob_match("refs/heads/*", "refs/tags/v1"));
        assert!(glob_match("refs/heads/bottle/*", "refs/heads/bottle/x"));
        assert!(!glob_match("refs/heads/bottle/*", "refs/heads/bottlex"));
    }

    #[test]
    fn default_policy_allows_branches_only_fast_forward() {
        let p = PushPolicy::default();
        assert!(check(&p, &up(Z, B, "refs/heads/new"), || unreachable!()).is_ok());
        assert!(check(&p, &up(A, B, "refs/heads/main"), || true).is_ok());
        let e = check(&p, &up(A, B, "refs/heads/main"), || false).unwrap_err();
        assert!(e.contains("non-fast-forward"), "{e}");
        assert!(check(&p, &up(A, Z, "refs/heads/main"), || true)
            .unwrap_err()
            .contains("deleting"));
        assert!(check(&p, &up(Z, B, "refs/tags/v1"), || true).is_err());
        assert!(check(&p, &up(Z, B, "refs/notes/commits"), || true).is_err());
    }

    #[test]
    fn enabled_features_and_force_namespace() {
        let p = PushPolicy {
            push: vec!["refs/heads/*".into(), "refs/tags/*".into()],
            allow_delete: true,
            allow_tags: true,
            allow_force: false,
            force_namespaces: vec!["refs/heads/bottle/*".into()],
        };
        assert!(check(&p, &up(Z, B, "refs/tags/v1"), || true).is_ok());
        assert!(check(&p, &up(A, Z, "refs/heads/old"), || true).is_ok());
        assert!(check(&p, &up(A, B, "refs/heads/bottle/wip"), || false).is_ok());
        assert!(check(&p, &up(A, B, "refs/heads/main"), || false).is_err());
    }
}

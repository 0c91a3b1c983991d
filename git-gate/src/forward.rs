//! Forwarding an accepted push from the mirror's quarantine to upstream, from inside the
//! `pre-receive` hook, so the agent's push succeeds only if upstream accepted it.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::credential::scrub;
use crate::policy::RefUpdate;

/// The result of an upstream push: whether upstream accepted every ref, and git's report
/// (porcelain status lines and messages) with every credential scrubbed.
#[derive(Debug)]
pub struct Forwarded {
    /// Upstream accepted all updates (the push is atomic).
    pub accepted: bool,
    /// Report lines, scrubbed.
    pub lines: Vec<String>,
}

/// The `git push` arguments for `updates` (after the program name): atomic, porcelain, and a
/// lease per ref on the value the mirror had (upstream's at the advertisement), so a push
/// racing an upstream change is refused upstream instead of overwriting it.
pub fn push_args(url: &str, updates: &[RefUpdate]) -> Vec<String> {
    let mut args = vec![
        // Objects keep the form the agent's pack gave them: deltas are reused, and what came
        // without a delta is not searched for one again (that search is the client's job and
        // would double the cost of forwarding a large push).
        "-c".to_string(),
        "pack.window=0".into(),
        "push".to_string(),
        "--porcelain".into(),
        "--atomic".into(),
        "--no-verify".into(),
        "--quiet".into(),
    ];
    for u in updates {
        let expect = if u.is_create() { "" } else { u.old.as_str() };
        args.push(format!("--force-with-lease={}:{expect}", u.name));
    }
    args.push("--".into());
    args.push(url.to_string());
    for u in updates {
        if u.is_delete() {
            args.push(format!(":{}", u.name));
        } else {
            args.push(format!("{}:{}", u.new, u.name));
        }
    }
    args
}

/// Runs `git push` to `url` (with the caller's environment: quarantine and credential header)
/// and waits at most `timeout`, killing it after that.
pub fn push_upstream(
    git: &Path,
    url: &str,
    updates: &[RefUpdate],
    secrets: &[String],
    timeout: Duration,
) -> Forwarded {
    let mut child = match Command::new(git)
        .args(push_args(url, updates))
        // A local (file://) upstream's receive-pack would inherit it and refuse to update
        // refs; our own side needs only GIT_OBJECT_DIRECTORY/ALTERNATES to read the objects.
        .env_remove("GIT_QUARANTINE_PATH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return Forwarded {
                accepted: false,
                lines: vec![format!("cannot run git push: {e}")],
            }
        }
    };
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    let mut lines: Vec<String> = Vec::new();
    for chunk in [&stderr, &stdout] {
        for l in String::from_utf8_lossy(chunk).lines() {
            let l = l.trim_end();
            if !l.is_empty() && l != "Done" {
                lines.push(scrub(l, secrets));
            }
        }
    }
    let accepted = match status {
        Some(s) => s.success(),
        None => {
            lines.push(format!("upstream push did not finish within {timeout:?}"));
            false
        }
    };
    Forwarded { accepted, lines }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_lease_every_ref_and_end_options_before_the_url() {
        let z = "0".repeat(40);
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let ups = vec![
            RefUpdate {
                old: z.clone(),
                new: a.clone(),
                name: "refs/heads/new".into(),
            },
            RefUpdate {
                old: a.clone(),
                new: b.clone(),
                name: "refs/heads/main".into(),
            },
            RefUpdate {
                old: b.clone(),
                new: z.clone(),
                name: "refs/heads/gone".into(),
            },
        ];
        let args = push_args("https://h/r.git", &ups);
        assert!(args.contains(&"--force-with-lease=refs/heads/new:".to_string()));
        assert!(args.contains(&format!("--force-with-lease=refs/heads/main:{a}")));
        let dd = args.iter().position(|a| a == "--").unwrap();
        assert_eq!(args[dd + 1], "https://h/r.git");
        assert_eq!(args[dd + 2], format!("{a}:refs/heads/new"));
        assert_eq!(args[dd + 4], ":refs/heads/gone");
    }
}

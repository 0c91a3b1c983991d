//! `bottle scan` end to end: runs the built binary on temporary directories.

use std::path::Path;
use std::process::{Command, Output};

/// A GitHub classic PAT shaped token assembled at runtime so no literal secret sits in the source.
fn fake_github_token() -> String {
    let alphabet: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
    let body: String = (0..36)
        .map(|i| alphabet[(i * 7 + 3) % alphabet.len()])
        .collect();
    format!("{}{}", ["gh", "p_"].concat(), body)
}

fn bottle_scan(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bottle"))
        .arg("scan")
        .args(args)
        .arg(dir)
        .output()
        .expect("run the bottle binary")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn planted_token_is_found_and_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let token = fake_github_token();
    std::fs::write(dir.path().join("README.md"), "hello\n").unwrap();
    std::fs::write(
        dir.path().join("config.env"),
        format!("# settings\nGH_TOKEN={token}\n"),
    )
    .unwrap();

    let out = bottle_scan(&[], dir.path());
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "output: {all}");
    assert!(!all.contains(&token), "full token leaked: {all}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("config.env:2:"),
        "output: {all}"
    );

    let out = bottle_scan(&["--json"], dir.path());
    assert_eq!(out.status.code(), Some(1), "output: {}", text(&out));
    assert!(!text(&out).contains(&token));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        assert!(v["path"].as_str().unwrap().ends_with("config.env"), "{v}");
        assert_eq!(v["line"], 2, "{v}");
        assert!(v["rule_id"].is_string(), "{v}");
    }
}

#[test]
fn clean_directory_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.rs"), "fn main() {}\n").unwrap();
    let out = bottle_scan(&[], dir.path());
    assert_eq!(out.status.code(), Some(0), "output: {}", text(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn missing_path_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = bottle_scan(&[], &dir.path().join("nope"));
    assert_eq!(out.status.code(), Some(2), "output: {}", text(&out));
}

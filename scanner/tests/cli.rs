//! `bottle scan` library side: files, directories, git ranges, exit codes, output formats.

use std::path::PathBuf;
use std::process::Command;

use bottle_scanner::cli::{run_with, ScanArgs};
use bottle_scanner::corpus::Rng;

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scanner-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &ScanArgs) -> (i32, String, String) {
    let (mut o, mut e) = (Vec::new(), Vec::new());
    let code = run_with(args, &mut o, &mut e);
    (
        code,
        String::from_utf8(o).unwrap(),
        String::from_utf8(e).unwrap(),
    )
}

#[test]
fn files_dirs_exit_codes_and_formats() {
    let d = tmpdir("files");
    let tok = format!("gh{}_{}", "p", Rng::new(1).chars('a', 36));
    std::fs::write(d.join("clean.rs"), "fn main() {}\n").unwrap();
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("sub/leak.env"), format!("A=1\nX={tok}\n")).unwrap();
    std::fs::write(d.join("bin.dat"), b"\0\0binary ghp_").unwrap();
    std::fs::create_dir_all(d.join(".git")).unwrap();
    std::fs::write(d.join(".git/config"), format!("{tok}\n")).unwrap();
    let args = ScanArgs {
        paths: vec![d.clone()],
        ..Default::default()
    };
    let (code, out, err) = run(&args);
    assert_eq!(code, 1, "{out}{err}");
    let line = out.lines().next().unwrap();
    assert!(
        line.ends_with("sub/leak.env:2:3 github-pat ghp_…(40)"),
        "{line}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(!out.contains(&tok[4..]) && !err.contains(&tok[4..]));
    let (code, out, _) = run(&ScanArgs {
        json: true,
        ..args.clone()
    });
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["rule_id"], "github-pat");
    assert_eq!(v["line"], 2);
    let (code, _, _) = run(&ScanArgs {
        paths: vec![d.join("clean.rs")],
        ..Default::default()
    });
    assert_eq!(code, 0);
    let (code, _, err) = run(&ScanArgs {
        paths: vec![d.join("nope")],
        ..Default::default()
    });
    assert_eq!(code, 2);
    assert!(err.contains("no such file"));
    let (code, _, err) = run(&ScanArgs {
        disable: vec!["github-pat".into()],
        ..args
    });
    assert_eq!(code, 2);
    assert!(err.contains("core floor"), "{err}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn git_range_scans_added_lines_and_messages() {
    let d = tmpdir("git");
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .arg("-C")
            .arg(&d)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@e")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@e")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(d.join("a.txt"), "one\n").unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "base"]);
    let base = git(&["rev-parse", "HEAD"]).trim().to_string();
    let mut rng = Rng::new(2);
    let tok = format!("gh{}_{}", "p", rng.chars('a', 36));
    let tok2 = format!("gl{}-{}", "pat", rng.chars('a', 20));
    std::fs::write(d.join("a.txt"), format!("one\ntwo\nkey={tok}\n")).unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", &format!("add stuff\n\nrefs {tok2}")]);
    let args = ScanArgs {
        git_range: Some(format!("{base}..HEAD")),
        repo: Some(d.clone()),
        ..Default::default()
    };
    let (code, out, err) = run(&args);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains(":a.txt:3:5 github-pat"), "{out}");
    assert!(out.contains("(commit message):3:6 gitlab-pat"), "{out}");
    let (code, _, _) = run(&ScanArgs {
        git_range: Some("HEAD..HEAD".into()),
        ..args.clone()
    });
    assert_eq!(code, 0);
    let (code, _, err) = run(&ScanArgs {
        git_range: Some("--all".into()),
        ..args
    });
    assert_eq!(code, 2);
    assert!(err.contains("revision range"));
    std::fs::remove_dir_all(&d).ok();
}

/// `bottle scan` judges a file as the proxy judges a body: a percent-encoded webhook in a
/// Markdown link, a base64 JSON value and a `\u`-escaped token in a JSON file are found, at
/// their lines, the same token as in a request body.
#[test]
fn files_get_the_body_decoders() {
    use base64::Engine as _;
    let d = tmpdir("decoders");
    let mut rng = Rng::new(9);
    let hook = format!(
        "https://hooks.slack.com/services/T{}/B{}/{}",
        rng.chars('U', 8),
        rng.chars('U', 8),
        rng.chars('a', 24)
    );
    let enc: String = hook.bytes().map(|b| format!("%{b:02X}")).collect();
    std::fs::write(
        d.join("notes.md"),
        format!("# Notes\n\nSee [hook]({enc}).\n"),
    )
    .unwrap();
    let tok = format!("gh{}_{}", "p", rng.chars('a', 36));
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("token={tok}"));
    std::fs::write(
        d.join("cfg.json"),
        format!(
            "{{\n  \"a\": \"{b64}\",\n  \"b\": \"\\u0067{}\"\n}}\n",
            &tok[1..]
        ),
    )
    .unwrap();
    let (code, out, err) = run(&ScanArgs {
        paths: vec![d.clone()],
        ..Default::default()
    });
    assert_eq!(code, 1, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cfg.json:2:") && l.contains(" github-pat ")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cfg.json:3:") && l.contains(" github-pat ")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("notes.md:3:") && l.contains(" slack-webhook-url ")),
        "{out}"
    );
    // The same bytes as a request body: the same rules fire.
    let s = bottle_scanner::Scanner::builder()
        .default_rules(true)
        .build()
        .unwrap();
    for f in ["notes.md", "cfg.json"] {
        let data = std::fs::read(d.join(f)).unwrap();
        let body =
            bottle_scanner::decode::scan_body(&s, None, None, &data, &Default::default()).unwrap();
        let mut want: Vec<String> = body.findings.iter().map(|f| f.rule_id.clone()).collect();
        let mut got: Vec<String> = bottle_scanner::decode::scan_file(&s, &data)
            .iter()
            .map(|f| f.rule_id.clone())
            .collect();
        want.sort();
        want.dedup();
        got.sort();
        got.dedup();
        assert_eq!(got, want, "{f}");
    }
    std::fs::remove_dir_all(&d).ok();
}

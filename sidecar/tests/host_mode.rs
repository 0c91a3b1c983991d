//! Host mode of the `bottle-sidecar` binary: gen-ca, refusing bad config, serving a deny.
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bottle-sidecar"))
}

fn tmp(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("bottle-sidecar-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn gen_ca_writes_cert_and_private_key() {
    let d = tmp("genca");
    let out = bin().args(["gen-ca", "--out"]).arg(&d).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert = std::fs::read_to_string(d.join("ca.pem")).unwrap();
    assert!(cert.contains("BEGIN CERTIFICATE"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn invalid_policy_does_not_start_and_names_file_and_line() {
    let d = tmp("badpolicy");
    assert!(bin()
        .args(["gen-ca", "--out"])
        .arg(&d)
        .status()
        .unwrap()
        .success());
    std::fs::write(
        d.join("p.toml"),
        "[[route]]\nhost = \"ok.test\"\nnonsense = 1\n",
    )
    .unwrap();
    let out = bin()
        .arg("--policy")
        .arg(d.join("p.toml"))
        .arg("--ca-cert")
        .arg(d.join("ca.pem"))
        .arg("--ca-key")
        .arg(d.join("ca.key"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("p.toml:3"), "{err}");
    assert!(err.contains("nonsense"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn serves_and_denies_with_audit_on_stdout() {
    let d = tmp("serve");
    assert!(bin()
        .args(["gen-ca", "--out"])
        .arg(&d)
        .status()
        .unwrap()
        .success());
    std::fs::write(d.join("p.toml"), "[[route]]\nhost = \"ok.test\"\n").unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = bin()
        .arg("--policy")
        .arg(d.join("p.toml"))
        .arg("--ca-cert")
        .arg(d.join("ca.pem"))
        .arg("--ca-key")
        .arg(d.join("ca.key"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--workers", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut s = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if start.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("sidecar did not listen: {e}"),
        }
    };
    s.write_all(
        b"GET http://nope.test/x?secret=1 HTTP/1.1\r\nHost: nope.test\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert!(resp.contains("x-bottle-deny: no_route"), "{resp}");
    let mut stdout = child.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\n") {
        assert_eq!(stdout.read(&mut b).unwrap(), 1);
        line.push(b[0]);
    }
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(v["reason"], "no_route");
    assert_eq!(v["path"], "/x?secret=");
    let _ = std::fs::remove_dir_all(&d);
}

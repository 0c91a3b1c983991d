//! Shared fixtures of the end-to-end tests: the engine check, images, the fake outside world
//! (a test egress network with an HTTPS + git upstream), per-test bottle homes, and helpers
//! to run `bottle` and `docker`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The bottle binary under test.
pub fn bottle_bin() -> &'static str {
    env!("CARGO_BIN_EXE_bottle")
}

/// Runs `docker <args>`; returns the output.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("running the docker CLI")
}

/// Runs `docker <args>`, asserting success; returns trimmed stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let o = docker(args);
    assert!(
        o.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// True when an engine answers. When `CI` is set a missing engine is a failure.
pub fn engine_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let ok = Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set but `docker version` failed (no Docker engine, or no docker CLI on PATH): the end-to-end tests must run in CI");
            }
            eprintln!("\n**********\nSKIPPED: no Docker engine — the bottle end-to-end tests did not run\n**********\n");
        }
        ok
    })
}

/// Skips the calling test (returns) when there is no engine.
#[macro_export]
macro_rules! require_engine {
    () => {
        if !$crate::harness::engine_available() {
            return;
        }
    };
}

/// Image tags built once per run by `bottle images build --test`.
pub struct Images {
    /// The agent base image (also what the test uses to run helper containers).
    pub agent: String,
    /// The test upstream image.
    pub upstream: String,
    /// The sidecar image.
    pub sidecar: String,
}

/// Builds (or finds) the images.
pub fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let o = Command::new(bottle_bin())
            .args(["images", "build", "--test"])
            .stderr(Stdio::inherit())
            .output()
            .expect("running bottle images build");
        assert!(o.status.success(), "bottle images build --test failed");
        let out = String::from_utf8_lossy(&o.stdout);
        let find = |repo: &str| {
            out.lines()
                .find(|l| l.starts_with(repo))
                .unwrap_or_else(|| panic!("no {repo} image in `bottle images build` output: {out}"))
                .trim()
                .to_string()
        };
        Images {
            agent: find("bottle/agent-shell:"),
            upstream: find("bottle/test-upstream:"),
            sidecar: find("bottle/sidecar:"),
        }
    })
}

/// The fake outside world shared by the tests of one run.
pub struct World {
    /// Test egress network name (the sidecars join it through `BOTTLE_EGRESS_NETWORK`).
    pub net: String,
    /// Upstream container name.
    pub upstream: String,
    /// Upstream IP on the test network.
    pub upstream_ip: String,
    /// The upstream's CA certificate (PEM), trusted by the sidecar through `[proxy] extra_roots`.
    pub upstream_ca: String,
}

extern "C" fn cleanup_world() {
    let tag = format!("io.bottle.e2e={}", std::process::id());
    let kinds: [&[&str]; 2] = [&["ps", "-aq"], &["network", "ls", "-q"]];
    for kind in kinds {
        let mut args: Vec<&str> = kind.to_vec();
        let f = format!("label={tag}");
        args.extend(["--filter", &f]);
        if let Ok(o) = Command::new("docker").args(&args).output() {
            for id in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let rm: &[&str] = if kind[0] == "ps" {
                    &["rm", "-f", "-v"]
                } else {
                    &["network", "rm"]
                };
                let _ = Command::new("docker").args(rm).arg(id).output();
            }
        }
    }
}

/// Removes fixtures left by earlier runs whose test process is gone.
fn sweep_stale_worlds() {
    for (list, rm) in [
        (vec!["ps", "-a"], vec!["rm", "-f", "-v"]),
        (vec!["network", "ls"], vec!["network", "rm"]),
    ] {
        let mut args = list.clone();
        args.extend([
            "--filter",
            "label=io.bottle.e2e",
            "--format",
            "{{.ID}} {{.Label \"io.bottle.e2e\"}}",
        ]);
        let out = docker_ok(&args);
        for line in out.lines() {
            let mut it = line.split_whitespace();
            let (Some(id), Some(pid)) = (it.next(), it.next()) else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let mut a = rm.clone();
                a.push(id);
                let _ = docker(&a);
            }
        }
    }
}

/// Starts (once) the test network and the upstream.
pub fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let imgs = images();
        sweep_stale_worlds();
        let pid = std::process::id();
        let label = format!("io.bottle.e2e={pid}");
        let net = format!("bottle-e2e-{pid}");
        docker_ok(&[
            "network",
            "create",
            "--label",
            &label,
            "--subnet",
            &free_test_subnet(),
            &net,
        ]);
        // SAFETY: registering a plain extern "C" function to run at process exit.
        unsafe {
            libc::atexit(cleanup_world);
        }
        let upstream = format!("bottle-e2e-upstream-{pid}");
        docker_ok(&[
            "run",
            "-d",
            "--name",
            &upstream,
            "--label",
            &label,
            "--network",
            &net,
            "--network-alias",
            "upstream.test",
            &imgs.upstream,
            "--name",
            "upstream.test",
            "--http-port",
            "0",
        ]);
        let deadline = Instant::now() + Duration::from_secs(60);
        let ca = loop {
            let logs = docker_ok(&["logs", &upstream]);
            if let Some(pem) = logs.lines().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["event"] == "ca")
                    .then(|| v["pem"].as_str().map(str::to_string))
                    .flatten()
            }) {
                if logs.contains("\"listening\"") {
                    break pem;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the test upstream did not start: {logs}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        let ip = docker_ok(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &upstream,
        ]);
        World {
            net,
            upstream,
            upstream_ip: ip,
            upstream_ca: ca,
        }
    })
}

/// A /24 for the test network outside the bottle pool, not used by another network.
pub fn free_test_subnet() -> String {
    let used = docker_ok(&[
        "network",
        "inspect",
        "--format",
        "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
        "bridge",
    ]);
    let all = {
        let ids = docker_ok(&["network", "ls", "-q"]);
        let mut s = used;
        for id in ids.split_whitespace() {
            s.push(' ');
            s.push_str(&docker_ok(&[
                "network",
                "inspect",
                "--format",
                "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
                id,
            ]));
        }
        s
    };
    for third in (std::process::id() % 200)..255 {
        let cand = format!("10.214.{third}.0/24");
        if !all.contains(&format!("10.214.{third}.")) {
            return cand;
        }
    }
    panic!("no free 10.214.x.0/24 for the e2e network");
}

/// A per-test bottle home and workspace.
pub struct Home {
    /// `$BOTTLE_HOME`.
    pub home: PathBuf,
    /// The workspace (cwd of `bottle`), owned by uid 1000 when we are root.
    pub workspace: PathBuf,
    /// Value of the test secret (what `BOTTLE_E2E_TOKEN` holds).
    pub secret: String,
    _dir: TempDir,
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A random lower-case hex string.
pub fn rand_hex(n: usize) -> String {
    use std::io::Read;
    let mut b = vec![0u8; n.div_ceil(2)];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect::<String>()[..n].to_string()
}

/// Creates a bottle home with bottle `e2e`: a route to the upstream (its CA trusted, its
/// private IP allowed), secret `E2E_TOKEN` injected as a Bearer token on `/auth/*`.
pub fn home(name: &str) -> Home {
    let w = world();
    let dir = std::env::temp_dir().join(format!("bottle-e2e-{name}-{}", rand_hex(8)));
    let home = dir.join("home");
    let workspace = dir.join("ws");
    std::fs::create_dir_all(home.join("bottles")).unwrap();
    std::fs::create_dir_all(&workspace).unwrap();
    // SAFETY: plain libc calls on paths we just created.
    unsafe {
        if libc::geteuid() == 0 {
            let c = std::ffi::CString::new(workspace.as_os_str().to_str().unwrap()).unwrap();
            libc::chown(c.as_ptr(), 1000, 1000);
        }
    }
    let secret = format!("e2e-secret-{}", rand_hex(32));
    let toml = format!(
        r#"description = "e2e test bottle"
image = "shell"
workspace = "bind"

[resources]
cpus = 1
memory = "512m"
pids = 256

[proxy]
extra_roots = [{ca:?}]

[[route]]
id = "upstream"
host = "upstream.test"
allow_private = ["{ip}/32"]
auth = {{ scheme = "Bearer", secret = "E2E_TOKEN" }}

[secrets]
E2E_TOKEN = {{ env = "BOTTLE_E2E_TOKEN", placeholder_env = ["E2E_TOKEN"] }}
"#,
        ca = w.upstream_ca,
        ip = w.upstream_ip
    );
    std::fs::write(home.join("bottles/e2e.toml"), toml).unwrap();
    Home {
        home,
        workspace,
        secret,
        _dir: TempDir(dir),
    }
}

/// The result of one `bottle run --json`.
#[derive(Debug)]
pub struct Run {
    /// Process exit code.
    pub code: i32,
    /// The JSON result object (stdout).
    pub result: serde_json::Value,
    /// Everything on stderr (agent output with --json, and bottle's messages).
    pub stderr: String,
}

/// Pins the images built at the start of the run (`BOTTLE_SIDECAR_IMAGE`,
/// `BOTTLE_AGENT_IMAGE`), so a source edit during the run triggers no rebuild. Images given by
/// the caller's environment win.
pub fn pin_images(c: &mut Command) {
    let imgs = images();
    for (var, tag) in [
        ("BOTTLE_SIDECAR_IMAGE", &imgs.sidecar),
        ("BOTTLE_AGENT_IMAGE", &imgs.agent),
    ] {
        if std::env::var_os(var).is_none() {
            c.env(var, tag);
        }
    }
}

/// A `bottle` command for this home.
pub fn bottle_cmd(h: &Home) -> Command {
    let w = world();
    let mut c = Command::new(bottle_bin());
    pin_images(&mut c);
    c.current_dir(&h.workspace)
        .env("BOTTLE_HOME", &h.home)
        .env("BOTTLE_EGRESS_NETWORK", &w.net)
        .env("BOTTLE_E2E_TOKEN", &h.secret)
        .env_remove("BOTTLE_VERBOSE");
    c
}

/// Spawns a detached bottle `e2e` running `bash --norc` and returns `bottle spawn --json`'s report.
pub fn spawn_shell(h: &Home, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["spawn", "e2e", "--json"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "bash", "--norc"]);
    let t = Instant::now();
    let o = bottle_cmd(h).args(&args).output().unwrap();
    assert!(
        o.status.success(),
        "bottle spawn: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(t.elapsed() < Duration::from_secs(120));
    serde_json::from_slice(&o.stdout).expect("spawn --json prints one object")
}

/// Kills bottle `id` when dropped, so a failed assertion does not leave a spawned bottle (and
/// its supervisor) running after the test (killing a bottle that already ended is a no-op).
pub struct KillOnDrop(pub String);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new(bottle_bin())
            .args(["kill", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs `script` with bash in a bottle and waits.
pub fn run_script(h: &Home, script: &str) -> Run {
    let o = bottle_cmd(h)
        .args(["run", "--json", "e2e", "--", "bash", "-c", script])
        .output()
        .expect("running bottle");
    Run {
        code: o.status.code().unwrap_or(-1),
        result: serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null),
        stderr: String::from_utf8_lossy(&o.stderr).to_string(),
    }
}

/// Lines the upstream logged as requests since the given log length.
pub fn upstream_requests() -> Vec<serde_json::Value> {
    let logs = docker_ok(&["logs", &world().upstream]);
    logs.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "request")
        .collect()
}

/// Waits until `path` exists (a file the agent creates in the workspace).
pub fn wait_for_file(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Ids of bottle containers and networks carrying `io.bottle.id=<id>`.
/// Waits (up to `timeout`) until bottle `id` has no container or network left, for the
/// background teardown of `bottle run`; returns what is left then.
pub fn wait_gone(id: &str, timeout: Duration) -> (Vec<String>, Vec<String>) {
    let deadline = Instant::now() + timeout;
    loop {
        let left = objects_of(id);
        if (left.0.is_empty() && left.1.is_empty()) || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (up to `timeout`) until `path` no longer exists; whether it is gone.
pub fn wait_removed(path: &std::path::Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    !path.exists()
}

pub fn objects_of(id: &str) -> (Vec<String>, Vec<String>) {
    let f = format!("label=io.bottle.id={id}");
    let c = docker_ok(&["ps", "-aq", "--filter", &f]);
    let n = docker_ok(&["network", "ls", "-q", "--filter", &f]);
    (
        c.split_whitespace().map(str::to_string).collect(),
        n.split_whitespace().map(str::to_string).collect(),
    )
}

/// Creates network `name` (labelled `label`) on a random free `10.<second>.x.0/24`: tests
/// create networks concurrently, so a subnet that overlaps is retried.
pub fn create_test_network(name: &str, label: &str, second: u8) {
    let mut tries = 0;
    loop {
        let third = u8::from_str_radix(&rand_hex(2), 16).unwrap();
        let subnet = format!("10.{second}.{third}.0/24");
        let o = docker(&[
            "network", "create", "--label", label, "--subnet", &subnet, name,
        ]);
        if o.status.success() {
            return;
        }
        tries += 1;
        assert!(
            tries < 30,
            "no free subnet for network {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// Host IPv4 addresses (every bridge and the main interface), except loopback.
pub fn host_ips() -> Vec<String> {
    let o = std::process::Command::new("ip")
        .args(["-4", "-o", "addr"])
        .output()
        .expect("ip addr");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(3)
                .map(|a| a.split('/').next().unwrap_or("").to_string())
        })
        .filter(|a| !a.starts_with("127.") && !a.is_empty())
        .collect()
}

//! The Docker container specs of a bottle, assembled from the launch spec and the host files
//! prepared for it: pure data (no engine calls), unit-tested below. The engine calls that use
//! them are in [`super::gate`] (sidecar) and [`super::containers`] (agent).
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, HostConfigLogConfig,
    Mount, MountType, NetworkingConfig,
};

use crate::guard::{self, GitMount, GitSnapshot};
use crate::runtime::bottle::{
    LaunchOptions, Mode, AGENT_CA_PATH, AGENT_GITCONFIG_PATH, AGENT_HOME, AGENT_PROMPT_PATH,
    GATE_MIRROR_SIZE, GATE_STATE_DIR, SIDECAR_NAME,
};
use crate::runtime::gate;
use crate::runtime::roots;
use crate::runtime::spec::LaunchSpec;

/// What the agent container is made of besides the spec: runtime, user, host files.
pub struct AgentFiles {
    /// OCI runtime (`None` = the engine's default).
    pub runtime: Option<String>,
    /// The image has `/bin/sh`, so an unattended agent can start behind the [`gate`].
    pub has_sh: bool,
    /// The image's own entrypoint.
    pub image_entrypoint: Vec<String>,
    /// The image's own default command.
    pub image_cmd: Vec<String>,
    /// User the agent runs as (the workspace owner).
    pub uid: u32,
    /// Group the agent runs as.
    pub gid: u32,
    /// Host directory bound at `/workspace` (`None`: a tmpfs).
    pub workspace: Option<PathBuf>,
    /// Bind mounts over the workspace protecting its git metadata.
    pub git_mounts: Vec<GitMount>,
    /// The git metadata before the agent starts.
    pub git_snapshot: GitSnapshot,
    /// The CA bundle (image roots + bottle CA) in the runtime dir.
    pub bundle: PathBuf,
    /// The bottle CA alone.
    pub ca: PathBuf,
    /// The system prompt, if any.
    pub prompt: Option<PathBuf>,
    /// `/etc/passwd` and `/etc/group` with user `agent` (when the image has both).
    pub passwd: Option<(PathBuf, PathBuf)>,
}

/// The sidecar's container: on the `egress` network only (joined to the internal network
/// before its start), read-only, no capabilities, its bootstrap read from the attached stdin;
/// with git remotes, a tmpfs for the gate's mirrors and a memory limit grown by as much.
pub fn sidecar_container(
    spec: &LaunchSpec,
    labels: HashMap<String, String>,
    egress: &str,
) -> ContainerCreateBody {
    let gate = !spec.git_remotes.is_empty();
    let sidecar_memory: i64 = (512 << 20) + if gate { GATE_MIRROR_SIZE } else { 0 };
    let host_config = HostConfig {
        network_mode: Some(egress.to_string()),
        readonly_rootfs: Some(true),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        sysctls: Some(HashMap::from([
            ("net.ipv4.ip_forward".into(), "0".into()),
            ("net.ipv4.ip_unprivileged_port_start".into(), "0".into()),
        ])),
        pids_limit: Some(256),
        memory: Some(sidecar_memory),
        memory_swap: Some(sidecar_memory),
        tmpfs: gate.then(|| {
            HashMap::from([(
                GATE_STATE_DIR.to_string(),
                format!(
                    "rw,nosuid,nodev,noexec,size={GATE_MIRROR_SIZE},uid=65534,gid=65534,mode=0700"
                ),
            )])
        }),
        nano_cpus: Some(1_000_000_000),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([("max-size".into(), "50m".into())])),
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.sidecar_image.clone()),
        cmd: Some(vec!["--bootstrap-stdin".into()]),
        user: Some("65534:65534".into()),
        hostname: Some(SIDECAR_NAME.into()),
        open_stdin: Some(true),
        stdin_once: Some(true),
        attach_stdin: Some(true),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        tty: Some(false),
        labels: Some({
            let mut l = labels;
            if gate {
                l.insert(crate::runtime::tickets::GIT_GATE_LABEL.into(), "1".into());
            }
            l
        }),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// The sidecar's endpoint on the internal network: static address `ip`, reachable as
/// [`SIDECAR_NAME`] and `proxy`.
pub fn sidecar_endpoint(ip: Ipv4Addr) -> EndpointSettings {
    EndpointSettings {
        aliases: Some(vec![SIDECAR_NAME.into(), "proxy".into()]),
        ipam_config: Some(EndpointIpamConfig {
            ipv4_address: Some(ip.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container's endpoint on a network at a fixed address, with no aliases (the models
/// network: nobody there may find the sidecar by name).
pub fn static_endpoint(ip: Ipv4Addr) -> EndpointSettings {
    EndpointSettings {
        ipam_config: Some(EndpointIpamConfig {
            ipv4_address: Some(ip.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What the agent's container is assembled from.
pub struct AgentInputs<'a> {
    /// The launch spec.
    pub spec: &'a LaunchSpec,
    /// The launch options (mode, command).
    pub opts: &'a LaunchOptions,
    /// Runtime, user and host files.
    pub files: &'a AgentFiles,
    /// The agent's env ([`crate::runtime::agent_env::agent_env`]).
    pub env: &'a [(String, String)],
    /// The agent's labels.
    pub labels: HashMap<String, String>,
    /// The internal network (id or name).
    pub internal: &'a str,
    /// The sidecar's address (the agent's DNS server).
    pub sidecar_ip: Ipv4Addr,
    /// The agent's static address.
    pub agent_ip: Ipv4Addr,
    /// A `resolv.conf` naming the sidecar (gVisor, which cannot reach the embedded DNS).
    pub resolv: Option<PathBuf>,
    /// The gate's git config (bottles with git remotes).
    pub gitconfig: Option<PathBuf>,
    /// `/etc/hosts` entries (`name:ip`) naming the model sidecars.
    pub extra_hosts: Vec<String>,
}

/// The agent's container (created, never started here): internal network only (static
/// address, DNS pinned to the sidecar), read-only, no capabilities, limits from the spec, the
/// workspace (or a tmpfs) at `/workspace` with its git metadata mounted over it. Returns
/// whether its command is held behind the start [`gate`] (`bottle run` with `/bin/sh` in the
/// image).
pub fn agent_container(i: &AgentInputs) -> (ContainerCreateBody, bool) {
    let m = i.files;
    let (uid, gid) = (m.uid, m.gid);
    let (sidecar_ip, agent_ip) = (i.sidecar_ip, i.agent_ip);
    let interactive = matches!(i.opts.mode, Mode::Start | Mode::Spawn);
    let bind = |src: &PathBuf, target: &str, ro: bool| Mount {
        typ: Some(MountType::BIND),
        source: Some(src.display().to_string()),
        target: Some(target.into()),
        read_only: Some(ro),
        ..Default::default()
    };
    let mut mounts = vec![
        bind(&m.bundle, roots::SYSTEM_BUNDLE, true),
        bind(&m.ca, AGENT_CA_PATH, true),
    ];
    if let Some(p) = &m.prompt {
        mounts.push(bind(p, AGENT_PROMPT_PATH, true));
    }
    if let Some((p, g)) = &m.passwd {
        mounts.push(bind(p, "/etc/passwd", true));
        mounts.push(bind(g, "/etc/group", true));
    }
    if let Some(r) = &i.resolv {
        mounts.push(bind(r, "/etc/resolv.conf", true));
    }
    if let Some(path) = &i.gitconfig {
        mounts.push(bind(path, AGENT_GITCONFIG_PATH, true));
    }
    let mut tmpfs = HashMap::from([
        (
            "/tmp".to_string(),
            "rw,nosuid,nodev,size=1g,mode=1777".to_string(),
        ),
        (
            AGENT_HOME.to_string(),
            format!("rw,nosuid,nodev,size=1g,uid={uid},gid={gid},mode=0700"),
        ),
    ]);
    let ws_target = i.spec.layout.workspace_target.as_str();
    match &m.workspace {
        Some(src) => {
            mounts.push(bind(src, ws_target, i.spec.layout.workspace_read_only));
            // Over the workspace: `.git` pinned, its config, hooks and info read-only.
            // The engine mounts parents before children (it sorts by target depth).
            for g in &m.git_mounts {
                mounts.push(bind(
                    &g.host,
                    &guard::container_path(ws_target, &g.rel),
                    g.read_only,
                ));
            }
        }
        None => {
            tmpfs.insert(
                ws_target.into(),
                format!("rw,nosuid,nodev,size=1g,uid={uid},gid={gid},mode=0755"),
            );
        }
    }
    // Mounts beyond bottle's own (gemba agents; checked when the plan was made).
    for x in &i.spec.layout.mounts {
        match x {
            crate::manifest::ExtraMount::Bind {
                source,
                target,
                read_only,
            } => mounts.push(bind(source, target, *read_only)),
            crate::manifest::ExtraMount::Tmpfs { target, size } => {
                tmpfs.insert(
                    target.clone(),
                    format!("rw,nosuid,nodev,size={size},uid={uid},gid={gid},mode=0700"),
                );
            }
        }
    }
    let host_config = HostConfig {
        network_mode: Some(i.internal.to_string()),
        dns: Some(vec![sidecar_ip.to_string()]),
        readonly_rootfs: Some(true),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        pids_limit: Some(i.spec.limits.pids),
        memory: Some(i.spec.limits.memory),
        memory_swap: Some(i.spec.limits.memory),
        nano_cpus: Some((i.spec.limits.cpus * 1e9) as i64),
        init: Some(true),
        tmpfs: Some(tmpfs),
        mounts: Some(mounts),
        runtime: m.runtime.clone(),
        extra_hosts: (!i.extra_hosts.is_empty()).then(|| i.extra_hosts.clone()),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([("max-size".into(), "50m".into())])),
        }),
        ..Default::default()
    };
    let endpoint = EndpointSettings {
        ipam_config: Some(EndpointIpamConfig {
            ipv4_address: Some(agent_ip.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let cmd = i
        .opts
        .cmd
        .clone()
        .or_else(|| (!i.spec.default_cmd.is_empty()).then(|| i.spec.default_cmd.clone()));
    // Unattended agents start beside the sidecar, their command held behind the gate.
    let gated = i.opts.mode == Mode::Run && m.has_sh;
    let (entrypoint, cmd) = if gated {
        let cmd = cmd.unwrap_or_else(|| m.image_cmd.clone());
        let (ep, cmd) = gate::gated(&m.image_entrypoint, &cmd);
        (Some(ep), Some(cmd))
    } else {
        (None, cmd)
    };
    let with_stdin = interactive || gated;
    let body = ContainerCreateBody {
        image: Some(i.spec.agent_image.clone()),
        entrypoint,
        cmd,
        user: Some(format!("{uid}:{gid}")),
        working_dir: Some(i.spec.layout.workdir().into()),
        hostname: Some("bottle".into()),
        env: Some(i.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        tty: Some(interactive),
        open_stdin: Some(with_stdin),
        // A spawned agent's input outlives each attachment (attach, send-keys).
        stdin_once: Some(with_stdin && i.opts.mode != Mode::Spawn),
        attach_stdin: Some(with_stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        labels: Some(i.labels.clone()),
        host_config: Some(host_config),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(i.internal.to_string(), endpoint)])),
        }),
        ..Default::default()
    };
    (body, gated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(has_sh: bool, workspace: Option<PathBuf>) -> AgentFiles {
        AgentFiles {
            runtime: None,
            has_sh,
            image_entrypoint: vec!["/entry".into()],
            image_cmd: vec!["agent-cli".into()],
            uid: 1000,
            gid: 1001,
            workspace,
            git_mounts: vec![],
            git_snapshot: GitSnapshot::default(),
            bundle: "/run/b/ca-bundle.crt".into(),
            ca: "/run/b/ca.pem".into(),
            prompt: None,
            passwd: None,
        }
    }

    fn opts(mode: Mode) -> LaunchOptions {
        LaunchOptions {
            mode,
            cmd: None,
            extra_env: vec![],
            egress_network: None,
            per_bottle_egress: false,
            verbose: false,
            wait_teardown: true,
            id: None,
        }
    }

    fn agent(spec: &LaunchSpec, o: &LaunchOptions, f: &AgentFiles) -> (ContainerCreateBody, bool) {
        agent_container(&AgentInputs {
            spec,
            opts: o,
            files: f,
            env: &[("A".into(), "1".into())],
            labels: HashMap::from([("io.bottle.role".into(), "agent".into())]),
            internal: "net-int",
            sidecar_ip: Ipv4Addr::new(10, 0, 0, 2),
            agent_ip: Ipv4Addr::new(10, 0, 0, 3),
            resolv: None,
            gitconfig: Some("/run/b/gitconfig".into()),
            extra_hosts: vec!["coder:10.0.0.4".into()],
        })
    }

    #[test]
    fn unattended_agent_is_gated_and_sealed() {
        let spec = LaunchSpec::sample();
        let (body, gated) = agent(&spec, &opts(Mode::Run), &files(true, None));
        assert!(gated);
        let ep = body.entrypoint.clone().unwrap();
        assert_eq!(ep[0], "/bin/sh");
        assert_eq!(ep.last().map(String::as_str), Some("/entry"));
        assert_eq!(body.cmd, Some(vec!["agent-cli".to_string()]));
        assert_eq!(body.tty, Some(false));
        assert_eq!(body.open_stdin, Some(true));
        assert_eq!(body.stdin_once, Some(true));
        assert_eq!(body.user.as_deref(), Some("1000:1001"));
        assert_eq!(body.env, Some(vec!["A=1".to_string()]));
        let hc = body.host_config.unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("net-int"));
        assert_eq!(hc.dns, Some(vec!["10.0.0.2".to_string()]));
        // Model sidecars are named in the agent's /etc/hosts.
        assert_eq!(hc.extra_hosts, Some(vec!["coder:10.0.0.4".to_string()]));
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(hc.memory, hc.memory_swap);
        let tmpfs = hc.tmpfs.unwrap();
        assert!(tmpfs["/workspace"].contains("uid=1000,gid=1001"));
        let targets: Vec<_> = hc
            .mounts
            .unwrap()
            .into_iter()
            .filter_map(|m| m.target)
            .collect();
        assert_eq!(
            targets,
            [roots::SYSTEM_BUNDLE, AGENT_CA_PATH, AGENT_GITCONFIG_PATH]
        );
        let eps = body.networking_config.unwrap().endpoints_config.unwrap();
        let ip = eps["net-int"]
            .ipam_config
            .as_ref()
            .unwrap()
            .ipv4_address
            .clone();
        assert_eq!(ip.as_deref(), Some("10.0.0.3"));
    }

    #[test]
    fn interactive_and_spawned_agents_get_a_terminal() {
        let mut spec = LaunchSpec::sample();
        spec.default_cmd = vec!["bash".into()];
        let f = files(true, Some("/home/u/ws".into()));
        let (body, gated) = agent(&spec, &opts(Mode::Start), &f);
        assert!(!gated);
        assert_eq!(body.entrypoint, None);
        assert_eq!(body.cmd, Some(vec!["bash".to_string()]));
        assert_eq!((body.tty, body.stdin_once), (Some(true), Some(true)));
        let hc = body.host_config.unwrap();
        assert!(!hc.tmpfs.unwrap().contains_key("/workspace"));
        assert!(hc
            .mounts
            .unwrap()
            .iter()
            .any(|m| m.target.as_deref() == Some("/workspace") && m.read_only == Some(false)));
        // A spawned agent's input outlives each attachment.
        let (body, _) = agent(&spec, &opts(Mode::Spawn), &f);
        assert_eq!((body.tty, body.stdin_once), (Some(true), Some(false)));
        // Without /bin/sh an unattended agent is not gated.
        let (_, gated) = agent(&spec, &opts(Mode::Run), &files(false, None));
        assert!(!gated);
    }

    #[test]
    fn a_gemba_layout_moves_the_workspace_and_adds_mounts() {
        let mut spec = LaunchSpec::sample();
        spec.layout = crate::runtime::spec::AgentLayout {
            workspace_target: "/work".into(),
            workspace_read_only: true,
            workdir: Some("/work/src".into()),
            mounts: vec![
                crate::manifest::ExtraMount::Bind {
                    source: "/opt/ref".into(),
                    target: "/ref".into(),
                    read_only: true,
                },
                crate::manifest::ExtraMount::Tmpfs {
                    target: "/scratch".into(),
                    size: 1 << 20,
                },
            ],
        };
        let f = files(true, Some("/home/u/ws".into()));
        let (body, _) = agent(&spec, &opts(Mode::Spawn), &f);
        assert_eq!(body.working_dir.as_deref(), Some("/work/src"));
        let hc = body.host_config.unwrap();
        let mounts = hc.mounts.unwrap();
        let find = |t: &str| {
            mounts
                .iter()
                .find(|m| m.target.as_deref() == Some(t))
                .cloned()
        };
        assert_eq!(find("/work").unwrap().read_only, Some(true));
        assert_eq!(find("/ref").unwrap().source.as_deref(), Some("/opt/ref"));
        assert!(find("/workspace").is_none());
        let tmpfs = hc.tmpfs.unwrap();
        assert!(tmpfs["/scratch"].contains("size=1048576,uid=1000,gid=1001"));
    }

    #[test]
    fn sidecar_with_git_remotes_gets_the_gate_tmpfs_and_label() {
        let mut spec = LaunchSpec::sample();
        let plain = sidecar_container(&spec, HashMap::new(), "egress");
        let hc = plain.host_config.unwrap();
        assert_eq!(hc.memory, Some(512 << 20));
        assert_eq!(hc.tmpfs, None);
        assert_eq!(hc.network_mode.as_deref(), Some("egress"));
        assert_eq!(plain.cmd, Some(vec!["--bootstrap-stdin".to_string()]));
        assert_eq!(plain.stdin_once, Some(true));
        spec.git_remotes =
            vec![toml::from_str("name = \"origin\"\nurl = \"https://github.com/o/r\"").unwrap()];
        let gated = sidecar_container(&spec, HashMap::new(), "egress");
        let hc = gated.host_config.unwrap();
        assert_eq!(hc.memory, Some((512 << 20) + GATE_MIRROR_SIZE));
        assert!(hc.tmpfs.unwrap().contains_key(GATE_STATE_DIR));
        assert!(gated
            .labels
            .unwrap()
            .contains_key(crate::runtime::tickets::GIT_GATE_LABEL));
        let ep = sidecar_endpoint(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(
            ep.aliases,
            Some(vec![SIDECAR_NAME.to_string(), "proxy".into()])
        );
    }
}

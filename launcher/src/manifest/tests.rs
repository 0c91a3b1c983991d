//! Tests of the manifest layer against temporary config homes.
use std::path::{Path, PathBuf};

use super::*;

/// A temporary `$BOTTLE_HOME` plus a repository directory.
struct Env {
    _dir: tempfile::TempDir,
    home: PathBuf,
    repo: PathBuf,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(home.join("bottles")).unwrap();
        std::fs::create_dir_all(home.join("agents")).unwrap();
        std::fs::create_dir_all(repo.join(".bottle/agents")).unwrap();
        Env {
            _dir: dir,
            home,
            repo,
        }
    }
    fn bottle(&self, name: &str, text: &str) -> &Env {
        std::fs::write(self.home.join("bottles").join(format!("{name}.toml")), text).unwrap();
        self
    }
    fn agent(&self, name: &str, text: &str) -> &Env {
        std::fs::write(self.home.join("agents").join(format!("{name}.md")), text).unwrap();
        self
    }
    fn repo_agent(&self, name: &str, text: &str) -> &Env {
        std::fs::write(
            self.repo.join(".bottle/agents").join(format!("{name}.md")),
            text,
        )
        .unwrap();
        self
    }
    fn plan(&self, agent: &str) -> Result<Plan, ManifestError> {
        resolve_plan(&self.home, &self.repo, agent)
    }
    fn err(&self, agent: &str) -> String {
        match self.plan(agent) {
            Ok(p) => panic!(
                "expected an error for {agent}, got a plan for bottle {}",
                p.bottle
            ),
            Err(e) => e.to_string(),
        }
    }
}

#[test]
fn shell_works_with_an_empty_home() {
    let env = Env::new();
    let p = env.plan("shell").unwrap();
    assert_eq!(p.bottle, "shell");
    assert_eq!(p.agent_origin, AgentOrigin::Implicit);
    assert!(p.policy.routes.is_empty());
    assert_eq!(p.workspace.mode, WorkspaceMode::Bind);
    assert_eq!(
        p.image,
        ImageSpec::Template {
            template: Template::Shell
        }
    );
    assert_eq!(
        p.resources,
        Resources {
            cpus: 2.0,
            memory: "4g".into(),
            memory_bytes: 4 << 30,
            pids: 512
        }
    );
    assert!(
        p.notes.iter().any(|n| n.contains("built-in")),
        "{:?}",
        p.notes
    );
    // Even with no config home at all.
    let p = resolve_plan(Path::new("/nonexistent/bottle-home"), &env.repo, "shell").unwrap();
    assert_eq!(p.bottle, "shell");
}

#[test]
fn unknown_key_has_line_and_did_you_mean() {
    let env = Env::new();
    env.bottle(
        "dev",
        "image = \"shell\"\n\n[[rotue]]\nhost = \"example.com\"\n",
    );
    let e = env.err("dev");
    assert!(
        e.starts_with("bottles/dev.toml:3: unknown key `rotue` in bottle; did you mean `route`?"),
        "{e}"
    );

    env.bottle(
        "dev",
        "image = \"shell\"\n[resources]\ncpus = 2\nmemroy = \"4g\"\n",
    );
    let e = env.err("dev");
    assert!(
        e.starts_with(
            "bottles/dev.toml:4: unknown key `memroy` in [resources]; did you mean `memory`?"
        ),
        "{e}"
    );

    env.bottle(
        "dev",
        "[[route]]\nhost = \"api.github.com\"\nauth = { sceme = \"Bearer\", secret = \"X\" }\n",
    );
    let e = env.err("dev");
    assert!(
        e.starts_with("bottles/dev.toml:3: unknown key `sceme` in `auth`; did you mean `scheme`?"),
        "{e}"
    );

    env.bottle("dev", "[secrets]\nX = { evn = \"X\" }\n");
    let e = env.err("dev");
    assert!(
        e.contains("bottles/dev.toml:2:")
            && e.contains("`evn`")
            && e.contains("did you mean `env`?"),
        "{e}"
    );
}

#[test]
fn wrong_type_has_line_and_key() {
    let env = Env::new();
    env.bottle("dev", "image = \"shell\"\n[resources]\npids = \"many\"\n");
    let e = env.err("dev");
    assert!(
        e.starts_with("bottles/dev.toml:3: wrong type for `pids`:"),
        "{e}"
    );

    env.bottle(
        "dev",
        "[[route]]\nhost = \"a.example\"\nports = [\"443\"]\n",
    );
    let e = env.err("dev");
    assert!(
        e.starts_with("bottles/dev.toml:3: wrong type for `ports`:"),
        "{e}"
    );

    env.bottle("dev", "[[route]]\nhost = \"a.example\"\ndlp = \"yes\"\n");
    let e = env.err("dev");
    assert!(
        e.starts_with("bottles/dev.toml:3: wrong type for `dlp`: expected true, false or a list"),
        "{e}"
    );

    env.bottle("dev", "workspace = \"bnd\"\n");
    let e = env.err("dev");
    assert!(
        e.starts_with("bottles/dev.toml:1: invalid value for `workspace`"),
        "{e}"
    );
    assert!(e.contains("did you mean `bind`?"), "{e}");

    env.bottle("dev", "image = \"cluade\"\n");
    let e = env.err("dev");
    assert!(
        e.starts_with("bottles/dev.toml:1: invalid value for `image`")
            && e.contains("did you mean `claude`?"),
        "{e}"
    );

    env.bottle("dev", "image = = \n");
    let e = env.err("dev");
    assert!(e.starts_with("bottles/dev.toml:1: "), "{e}");
}

#[test]
fn unknown_secret_names_die_with_did_you_mean() {
    let env = Env::new();
    env.bottle(
        "gh",
        "[secrets]\nGH_TOKEN = { env = \"GH_TOKEN\" }\n\n[[route]]\nid = \"api\"\nhost = \"api.github.com\"\nauth = { scheme = \"Bearer\", secret = \"GH_TOKN\" }\n",
    );
    let e = env.err("gh");
    assert!(
        e.starts_with("bottles/gh.toml:7: route `api` uses secret `GH_TOKN`"),
        "{e}"
    );
    assert!(e.contains("did you mean `GH_TOKEN`?"), "{e}");

    env.bottle(
        "gh",
        "[secrets]\nGH_TOKEN = { env = \"GH_TOKEN\" }\n[[git.remote]]\nname = \"origin\"\nurl = \"https://github.com/a/b.git\"\nsecret = \"GH_TOKE\"\n",
    );
    let e = env.err("gh");
    assert!(
        e.starts_with("bottles/gh.toml:6: git remote `origin` uses secret `GH_TOKE`"),
        "{e}"
    );
}

#[test]
fn extends_errors() {
    let env = Env::new();
    env.bottle("a", "extends = \"a\"\n");
    let e = env.err("a");
    assert!(
        e.starts_with("bottles/a.toml:1: bottle `a` extends itself"),
        "{e}"
    );

    env.bottle("a", "extends = \"b\"\n")
        .bottle("b", "\n\nextends = \"c\"\n")
        .bottle("c", "extends = \"a\"\n");
    let e = env.err("a");
    assert!(
        e.starts_with("bottles/c.toml:1: `extends` forms a cycle: a -> b -> c -> a"),
        "{e}"
    );

    env.bottle("a", "description = \"x\"\nextends = \"githb\"\n")
        .bottle("github", "");
    let e = env.err("a");
    assert!(
        e.starts_with("bottles/a.toml:2: parent bottle `githb` does not exist"),
        "{e}"
    );
    assert!(e.contains("did you mean `github`?"), "{e}");

    env.bottle("a", "extends = \"../etc/passwd\"\n");
    let e = env.err("a");
    assert!(e.contains("not a bottle name"), "{e}");
}

#[test]
fn proxy_validation_is_surfaced_with_the_bottle_file() {
    let env = Env::new();
    env.bottle(
        "p",
        "image = \"shell\"\n\n[[route]]\nid = \"bad\"\nhost = \"exa mple.com\"\n",
    );
    let e = env.err("p");
    assert!(
        e.starts_with("bottles/p.toml:5: route `bad` is refused by the proxy policy: host:"),
        "{e}"
    );

    env.bottle(
        "p",
        "[[route]]\nhost = \"ok.example\"\n[[route.matches]]\npath_regex = \"([\"\n",
    );
    let e = env.err("p");
    assert!(
        e.starts_with("bottles/p.toml:4: route `ok.example` is refused"),
        "{e}"
    );
    assert!(e.contains("path_regex"), "{e}");
}

#[test]
fn repo_agents_cannot_add_routes_or_secrets() {
    let env = Env::new();
    env.repo_agent(
        "evil",
        "+++\nbottle = \"shell\"\n\n[[route]]\nhost = \"evil.example\"\n+++\nhi\n",
    );
    let e = env.err("evil");
    assert!(
        e.starts_with(".bottle/agents/evil.md:4: unknown key `route` in agent front matter"),
        "{e}"
    );
    assert!(
        e.contains("A repository agent cannot set routes, secrets, git remotes"),
        "{e}"
    );

    env.repo_agent(
        "evil",
        "+++\nbottle = \"shell\"\n[secrets]\nX = { env = \"HOME\" }\n+++\n",
    );
    assert!(env.err("evil").contains("unknown key `secrets`"));

    env.repo_agent("evil", "+++\nbottle = \"shell\"\n[git]\nauthor_name = \"x\"\n[[git.remote]]\nname = \"o\"\nurl = \"https://evil.example/x.git\"\n+++\n");
    let e = env.err("evil");
    assert!(
        e.contains("unknown key `remote`") && e.contains("cannot set"),
        "{e}"
    );

    env.repo_agent(
        "evil",
        "+++\nbottle = \"shell\"\nenv = { HTTPS_PROXY = \"http://evil:1\" }\n+++\n",
    );
    let e = env.err("evil");
    assert!(e.contains("`HTTPS_PROXY` is set by the launcher"), "{e}");

    env.repo_agent("ok", "+++\nbottle = \"shell\"\nlabel = \"fixer\"\ncolour = \"cyan\"\nenv = { RUST_LOG = \"debug\" }\n+++\n\nYou fix bugs.\n");
    let p = env.plan("ok").unwrap();
    assert_eq!(p.agent_origin, AgentOrigin::Repo);
    assert_eq!(p.system_prompt, "You fix bugs.");
    assert_eq!(p.env.get("RUST_LOG").map(String::as_str), Some("debug"));
    assert_eq!(p.label.as_deref(), Some("fixer"));
    assert_eq!(p.color.as_deref(), Some("cyan"));
}

#[test]
fn home_agent_wins_over_repo_agent_with_a_note() {
    let env = Env::new();
    env.agent("dev", "+++\nbottle = \"shell\"\n+++\nHOME PROMPT\n");
    env.repo_agent("dev", "+++\nbottle = \"shell\"\n+++\nREPO PROMPT\n");
    let p = env.plan("dev").unwrap();
    assert_eq!(p.agent_origin, AgentOrigin::Home);
    assert_eq!(p.system_prompt, "HOME PROMPT");
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains(".bottle/agents/dev.md is ignored")),
        "{:?}",
        p.notes
    );
    assert!(p.render_human().contains("is ignored"));
}

#[test]
fn agent_errors() {
    let env = Env::new();
    env.agent("x", "bottle = \"shell\"\n");
    assert!(env
        .err("x")
        .starts_with("agents/x.md:1: an agent file starts with a `+++` line"));
    env.agent("x", "+++\nbottle = \"nope\"\n+++\n");
    let e = env.err("x");
    assert!(
        e.starts_with("agents/x.md:2: bottle `nope` does not exist"),
        "{e}"
    );
    env.agent("x", "+++\nbottle = \"shell\"\ncolor = \"purpel\"\n+++\n");
    let e = env.err("x");
    assert!(
        e.starts_with("agents/x.md:3: invalid value for `color`"),
        "{e}"
    );
    let e = env.err("nonesuch");
    assert!(e.starts_with("no agent named `nonesuch`"), "{e}");
    assert!(env.err("shel").contains("did you mean `shell`?"));
    assert!(env.err("../x").contains("agent names are"));
}

const BASE: &str = r#"
description = "base"
image = "claude"
workspace = "copy"
runtime = "runc"

[resources]
cpus = 4
memory = "8g"

[secrets]
ANTHROPIC_API_KEY = { env = "BOTTLE_T_ANTHROPIC" }
OLD = { env = "BOTTLE_T_OLD" }

[env]
A = "base-a"
B = "base-b"

[[route]]
id = "anthropic"
host = "api.anthropic.com"
auth = { header = "x-api-key", secret = "ANTHROPIC_API_KEY" }

[[route]]
host = "pypi.org"
auth = { scheme = "Bearer", secret = "OLD" }

[[git.remote]]
name = "origin"
url = "https://github.com/acme/base.git"

[proxy]
max_tunnels = 10
idle_timeout_ms = 1000
"#;

const CHILD: &str = r#"
extends = "base"
workspace = "bind"

[resources]
pids = 100

[secrets]
PYPI = { file = "pypi.token" }

[env]
B = "child-b"
C = "child-c"

[[route]]
host = "pypi.org"
auth = { scheme = "Bearer", secret = "PYPI" }

[[route]]
host = "files.pythonhosted.org"

[[git.remote]]
name = "origin"
url = "https://github.com/acme/child.git"

[proxy]
idle_timeout_ms = 2000
"#;

#[test]
fn merge_rules() {
    let env = Env::new();
    env.bottle("base", BASE).bottle("child", CHILD);
    let p = env.plan("child").unwrap();
    assert_eq!(p.extends, vec!["base".to_string()]);
    assert_eq!(
        p.sources,
        vec![
            "bottles/child.toml".to_string(),
            "bottles/base.toml".to_string()
        ]
    );
    // Scalars: child wins where set, parent otherwise.
    assert_eq!(p.workspace.mode, WorkspaceMode::Bind);
    assert_eq!(
        p.image,
        ImageSpec::Template {
            template: Template::Claude
        }
    );
    assert_eq!(p.runtime, RuntimeMode::Runc);
    assert_eq!(p.description.as_deref(), Some("base"));
    // Tables key-wise.
    assert_eq!(
        p.resources,
        Resources {
            cpus: 4.0,
            memory: "8g".into(),
            memory_bytes: 8 << 30,
            pids: 100
        }
    );
    assert_eq!(p.policy.settings.max_tunnels, Some(10));
    assert_eq!(p.policy.settings.idle_timeout_ms, Some(2000));
    // Env by key.
    let env_pairs: Vec<(&str, &str)> = p
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env_pairs,
        vec![("A", "base-a"), ("B", "child-b"), ("C", "child-c")]
    );
    // Routes by id: the child's pypi.org replaces the parent's in place; new ones appended.
    let ids: Vec<String> = p
        .policy
        .routes
        .iter()
        .map(|r| r.id.clone().unwrap_or(r.host.clone()))
        .collect();
    assert_eq!(ids, vec!["anthropic", "pypi.org", "files.pythonhosted.org"]);
    assert_eq!(p.policy.routes[1].auth.as_ref().unwrap().secret, "PYPI");
    // Remotes by name.
    assert_eq!(p.git.remotes.len(), 1);
    assert_eq!(p.git.remotes[0].url, "https://github.com/acme/child.git");
    // Secrets: OLD is no longer used by anything, so it is dropped with a note.
    let names: Vec<&str> = p.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["ANTHROPIC_API_KEY", "PYPI"]);
    assert!(p.notes.iter().any(|n| n.contains("`OLD`")), "{:?}", p.notes);
    assert_eq!(
        p.secrets[1].source,
        SecretSource::File(env.home.join("pypi.token"))
    );
    assert_eq!(p.secrets[1].declared_in, "bottles/child.toml");
    // Placeholders: automatic for the well-known provider name only.
    assert_eq!(p.placeholders.len(), 1);
    assert_eq!(
        p.placeholders["ANTHROPIC_API_KEY"],
        "bottle-placeholder-ANTHROPIC_API_KEY"
    );
    // The rendered policy is valid proxy TOML.
    let text = p.policy_toml().unwrap();
    bottle_proxy::policy::Policy::from_toml_str(&text, "rendered").unwrap();
    assert!(p.render_human().contains("pypi.org"));
}

#[test]
fn explicit_placeholders_and_conflicts() {
    let env = Env::new();
    env.bottle(
        "np",
        "[secrets]\nnpm = { env = \"X\", placeholder_env = [\"NPM_TOKEN\", \"NODE_AUTH_TOKEN\"] }\n[[route]]\nhost = \"registry.npmjs.org\"\nauth = { scheme = \"Bearer\", secret = \"npm\" }\n",
    );
    let p = env.plan("np").unwrap();
    assert_eq!(
        p.placeholders.keys().collect::<Vec<_>>(),
        vec!["NODE_AUTH_TOKEN", "NPM_TOKEN"]
    );
    env.bottle(
        "np",
        "[secrets]\nGH_TOKEN = { env = \"X\" }\n[env]\nGH_TOKEN = \"oops\"\n[[route]]\nhost = \"api.github.com\"\nauth = { scheme = \"Bearer\", secret = \"GH_TOKEN\" }\n",
    );
    let e = env.err("np");
    assert!(
        e.starts_with("bottles/np.toml:4: invalid value for `GH_TOKEN`")
            && e.contains("placeholder"),
        "{e}"
    );
}

#[test]
fn plan_json_contains_no_secret_value() {
    const PLANTED: &str = "ghp_PLANTEDsecretVALUE0123456789abcdef";
    let env = Env::new();
    std::env::set_var("BOTTLE_TEST_PLANTED_GH", PLANTED);
    let file = env.home.join("tok");
    std::fs::write(&file, PLANTED).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    env.bottle(
        "gh",
        "[secrets]\nGH_TOKEN = { env = \"BOTTLE_TEST_PLANTED_GH\" }\nF = { file = \"tok\" }\n[[route]]\nhost = \"api.github.com\"\nauth = { scheme = \"Bearer\", secret = \"GH_TOKEN\" }\n[[route]]\nhost = \"uploads.github.com\"\nauth = { scheme = \"Bearer\", secret = \"F\" }\n",
    );
    let p = env.plan("gh").unwrap();
    let json = serde_json::to_string(&p).unwrap();
    assert!(!json.contains(PLANTED), "{json}");
    assert!(json.contains("env:BOTTLE_TEST_PLANTED_GH"));
    assert!(!p.render_human().contains(PLANTED));
    assert!(!p.policy_toml().unwrap().contains(PLANTED));
    assert!(!format!("{p:?}").contains(PLANTED));
    // Resolution does produce the values (for the sidecar only).
    let values = p.resolve_secrets().unwrap();
    assert_eq!(values["GH_TOKEN"].as_str(), PLANTED);
    assert_eq!(values["F"].as_str(), PLANTED);
}

#[test]
fn check_all_reports_every_file() {
    let env = Env::new();
    env.bottle("good", "image = \"shell\"\n")
        .bottle("bad", "imgae = \"shell\"\n");
    env.agent("a", "+++\nbottle = \"good\"\n+++\n")
        .repo_agent("r", "+++\nbottle = \"missing\"\n+++\n");
    let results = check_all(&env.home, &env.repo);
    let summary: Vec<(String, bool)> = results
        .iter()
        .map(|(p, r)| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                r.is_ok(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("bad.toml".into(), false),
            ("good.toml".into(), true),
            ("a.md".into(), true),
            ("r.md".into(), false)
        ]
    );
    let e = results[0].1.as_ref().unwrap_err().to_string();
    assert!(e.contains("did you mean `image`?"), "{e}");
}

/// Copies the shipped `manifests/` into a temporary home and resolves every bottle and agent.
#[test]
fn shipped_manifests_load_and_resolve() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
    let env = Env::new();
    let mut bottles = 0;
    let mut agents = 0;
    for (sub, ext) in [("bottles", "toml"), ("agents", "md")] {
        for entry in std::fs::read_dir(shipped.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some(ext) {
                std::fs::copy(&path, env.home.join(sub).join(path.file_name().unwrap())).unwrap();
                if sub == "bottles" {
                    bottles += 1;
                } else {
                    agents += 1;
                }
            }
        }
    }
    assert!(
        bottles >= 5 && agents >= 3,
        "{bottles} bottles, {agents} agents"
    );
    for (path, res) in check_all(&env.home, &env.repo) {
        if let Err(e) = res {
            panic!("{}: {e}", path.display());
        }
    }
    for name in ["shell", "claude", "codex", "github", "local-model"] {
        let p = env.plan(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        bottle_proxy::policy::Policy::from_toml_str(&p.policy_toml().unwrap(), name).unwrap();
    }
    let claude = env.plan("claude").unwrap();
    assert_eq!(
        claude.image,
        ImageSpec::Template {
            template: Template::Claude
        }
    );
    assert!(claude
        .policy
        .routes
        .iter()
        .any(|r| r.host == "api.anthropic.com"));
    assert!(!claude
        .policy
        .routes
        .iter()
        .any(|r| r.host.contains("statsig") || r.host.contains("sentry")));
    assert!(!claude.placeholders.is_empty());
    assert!(!claude.system_prompt.is_empty());
    let gh = env.plan("github").unwrap();
    assert_eq!(gh.extends, vec!["shell".to_string()]);
    assert!(gh.placeholders.contains_key("GH_TOKEN"));
    // The derived git credential resolves to base64("x-access-token:<token>").
    std::env::set_var("GH_TOKEN", "ghp_example0123456789");
    let values = gh.resolve_secrets().unwrap();
    assert_eq!(values["GH_TOKEN"].as_str(), "ghp_example0123456789");
    assert_eq!(
        values["GH_GIT_BASIC"].as_str(),
        "eC1hY2Nlc3MtdG9rZW46Z2hwX2V4YW1wbGUwMTIzNDU2Nzg5"
    );
    for name in [
        "model-vllm-gpu",
        "model-vllm-cpu",
        "model-ollama",
        "model-llamacpp",
        "claude-local",
        "codex-local",
    ] {
        let p = env.plan(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(p.models.len(), 1, "{name}");
        assert!(
            p.policy.routes.is_empty(),
            "{name}: the agent has no egress"
        );
        assert!(!p.model_env.is_empty(), "{name}");
    }
    let gpu = env.plan("model-vllm-gpu").unwrap();
    assert_eq!(gpu.models[0].image, "vllm/vllm-openai");
    assert_eq!(gpu.models[0].context, Some(32768));
    assert_eq!(gpu.models[0].gpu, Some(Gpu::All));
    let cpu = env.plan("model-vllm-cpu").unwrap();
    assert_eq!(cpu.models[0].image, "vllm/vllm-openai-cpu");
    let ollama = env.plan("model-ollama").unwrap();
    assert_eq!(ollama.models[0].env["OLLAMA_CONTEXT_LENGTH"], "65536");
    assert!(ollama.models[0].pull.is_some());
    let llama = env.plan("model-llamacpp").unwrap();
    assert!(llama.models[0].egress.is_empty());
    assert!(llama.models[0].cmd.contains(&"--ctx-size".to_string()));
    let claude = env.plan("claude-local").unwrap();
    assert_eq!(
        claude.model_env["ANTHROPIC_BASE_URL"],
        "http://ollama:11434"
    );
    let codex = env.plan("codex-local").unwrap();
    assert_eq!(codex.model_env["OPENAI_BASE_URL"], "http://coder:8000/v1");
    assert_eq!(
        codex.model_env["BOTTLE_MODEL"],
        "Qwen/Qwen2.5-Coder-7B-Instruct"
    );
    let local = env.plan("local-model").unwrap();
    assert!(local
        .policy
        .routes
        .iter()
        .any(|r| !r.allow_private.is_empty()));
}

#[test]
fn inline_routes_and_default_bottle_name() {
    let env = Env::new();
    env.bottle("inl", "image = \"shell\"\nroute = [\n  { id = \"a\", host = \"a.example\" },\n  { id = \"b\", host = \"exa mple\" },\n]\n");
    let e = env.err("inl");
    assert!(
        e.starts_with("bottles/inl.toml:4: route `b` is refused"),
        "{e}"
    );

    // No `bottle =` key: the agent's own name is used, and the error says so.
    env.agent("solo", "+++\nlabel = \"x\"\n+++\n");
    let e = env.err("solo");
    assert!(
        e.contains("bottle `solo` does not exist") && e.contains("add one"),
        "{e}"
    );
    env.bottle("solo", "workspace = \"none\"\n");
    let p = env.plan("solo").unwrap();
    assert_eq!(p.bottle, "solo");
    assert_eq!(
        p.workspace,
        WorkspacePlan {
            mode: WorkspaceMode::None,
            host_path: None,
            container_path: None,
            read_only: false,
        }
    );
}

#[test]
fn env_values_with_nul_are_refused() {
    let env = Env::new();
    env.bottle("n", "[env]\nA = \"x\\u0000y\"\n");
    let e = env.err("n");
    assert!(
        e.starts_with("bottles/n.toml:2: invalid value for `A`") && e.contains("NUL"),
        "{e}"
    );
}

#[test]
fn resource_values_are_range_checked() {
    let env = Env::new();
    for (text, line, key) in [
        ("[resources]\nmemory = 0\n", 2, "memory"),
        ("[resources]\nmemory = \"1k\"\n", 2, "memory"),
        ("[resources]\n\ncpus = 0\n", 3, "cpus"),
        ("[resources]\npids = 1\n", 2, "pids"),
        ("image = 3\n", 1, "image"),
    ] {
        env.bottle("r", text);
        let e = env.err("r");
        assert!(
            e.starts_with(&format!("bottles/r.toml:{line}: ")) && e.contains(&format!("`{key}`")),
            "{text:?}: {e}"
        );
    }
}

#[test]
fn dockerfile_images_models_and_remotes() {
    let env = Env::new();
    std::fs::create_dir_all(env.home.join("images/mine")).unwrap();
    std::fs::write(env.home.join("images/mine/Dockerfile"), "FROM scratch\n").unwrap();
    env.bottle("d", "image = { dockerfile = \"images/mine/Dockerfile\" }\n");
    let p = env.plan("d").unwrap();
    assert_eq!(
        p.image,
        ImageSpec::Dockerfile {
            dockerfile: env.home.join("images/mine/Dockerfile"),
            context: env.home.join("images/mine"),
        }
    );
    env.bottle("d", "image = { dockerfile = \"nope/Dockerfile\" }\n");
    assert!(env.err("d").contains("does not exist"));
    env.bottle("d", "image = { dockerfil = \"x\" }\n");
    assert!(env.err("d").contains("did you mean `dockerfile`?"));

    // Any image reference with a `/` or `:` is a tag; bare words must be templates.
    for tag in [
        "bottle/agent-claude:local",
        "ghcr.io/acme/agent:1.2",
        "localhost:5000/team/agent",
        "debian:bookworm-slim",
        "acme/agent@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        env.bottle("t", &format!("image = \"{tag}\"\n"));
        assert_eq!(
            env.plan("t").unwrap().image,
            ImageSpec::Tag { tag: tag.into() },
            "{tag}"
        );
    }
    for (bad, why) in [
        ("Bottle/Agent:1", "lower-case"),
        ("acme/agent:", "a tag is"),
        ("acme//agent", "empty path component"),
        ("acme/agent@md5:00", "digest"),
        ("acme/agent:-x", "a tag is"),
    ] {
        env.bottle("t", &format!("image = \"{bad}\"\n"));
        let e = env.err("t");
        assert!(
            e.starts_with("bottles/t.toml:1: ")
                && e.contains("not a valid image reference")
                && e.contains(why),
            "{bad}: {e}"
        );
    }
    env.bottle("t", "image = \"claud\"\n");
    let e = env.err("t");
    assert!(
        e.contains("not a template") && e.contains("did you mean `claude`?"),
        "{e}"
    );

    env.bottle(
        "m",
        "[[model]]\nname = \"coder\"\nengine = \"vllm\"\nmodel = \"Qwen/Qwen2.5-Coder-7B-Instruct\"\n\n[[model]]\nname = \"small\"\nengine = \"ollama\"\nmodel = \"qwen2.5:0.5b\"\nport = 11434\n",
    );
    let p = env.plan("m").unwrap();
    assert_eq!(p.models.len(), 2);
    assert_eq!(p.models[1].engine, ModelEngine::Ollama);
    env.bottle(
        "m",
        "[[model]]\nname = \"a_b\"\nengine = \"vllm\"\nmodel = \"x\"\n",
    );
    assert!(env.err("m").contains("DNS label"));
    env.bottle(
        "m",
        "[[model]]\nname = \"a\"\nengine = \"tgi\"\nmodel = \"x\"\n",
    );
    let e = env.err("m");
    assert!(
        e.starts_with("bottles/m.toml:3: invalid value for `engine`"),
        "{e}"
    );

    env.bottle(
        "g",
        "[[git.remote]]\nname = \"origin\"\nurl = \"http://insecure.example/x.git\"\n",
    );
    let e = env.err("g");
    assert!(
        e.starts_with("bottles/g.toml:3: invalid value for `url`"),
        "{e}"
    );
    env.bottle("g", "[[git.remote]]\nname = \"origin\"\nurl = \"https://github.com/acme/w.git\"\n[[git.remote]]\nname = \"origin\"\nurl = \"https://github.com/acme/v.git\"\n");
    assert!(env.err("g").contains("declared twice"));
}

#[test]
fn list_agents_covers_files_and_bottles() {
    let env = Env::new();
    env.agent("a", "+++\nbottle = \"shell\"\n+++\n")
        .repo_agent("a", "+++\nbottle = \"shell\"\n+++\n");
    env.repo_agent("r", "+++\nbottle = \"shell\"\n+++\n")
        .bottle("b", "");
    let list: Vec<(String, AgentOrigin)> = list_agents(&env.home, &env.repo)
        .into_iter()
        .map(|a| (a.name, a.origin))
        .collect();
    assert_eq!(
        list,
        vec![
            ("a".to_string(), AgentOrigin::Home),
            ("r".to_string(), AgentOrigin::Repo),
            ("b".to_string(), AgentOrigin::Implicit),
            ("shell".to_string(), AgentOrigin::Implicit),
        ]
    );
}

#[test]
fn dlp_rule_files_are_read_checked_and_inlined() {
    let env = Env::new();
    std::fs::create_dir_all(env.home.join("rules")).unwrap();
    let rules = "[[rules]]\nid = \"acme-token\"\ndescription = \"ACME token\"\nregex = '''acme_[a-z0-9]{20}'''\nkeywords = [\"acme_\"]\n";
    std::fs::write(env.home.join("rules/acme.toml"), rules).unwrap();
    env.bottle(
        "p",
        "[proxy]\ndlp_rules = [\"rules/acme.toml\"]\ndlp_disable = [\"jwt\"]\n\n[[route]]\nhost = \"a.example\"\ndlp = [\"acme-token\"]\n",
    );
    let p = env.plan("p").unwrap();
    assert_eq!(p.policy.settings.dlp_rules, vec![rules.to_string()]);
    let toml = p.policy_toml().unwrap();
    assert!(
        toml.contains("acme-token") && toml.contains("dlp_disable"),
        "{toml}"
    );

    // A broken rule file is reported with its own path, line and rule id.
    std::fs::write(
        env.home.join("rules/acme.toml"),
        "[[rules]]\nid = \"acme-token\"\nregex = '''(oops'''\nkeywords = [\"acme_\"]\n",
    )
    .unwrap();
    let e = env.err("p");
    assert!(
        e.starts_with("bottles/p.toml:2:")
            && e.contains("rules/acme.toml")
            && e.contains("acme-token"),
        "{e}"
    );
    // A missing file says where relative paths start.
    env.bottle("p", "[proxy]\ndlp_rules = [\"rules/nope.toml\"]\n");
    let e = env.err("p");
    assert!(e.contains("relative to $BOTTLE_HOME"), "{e}");
    // A typo in a route's rule list gets a suggestion.
    env.bottle("p", "[[route]]\nhost = \"a.example\"\ndlp = [\"jwtt\"]\n");
    let e = env.err("p");
    assert!(e.contains("did you mean `jwt`"), "{e}");
}

#[test]
fn git_remote_fields_are_checked_with_the_line() {
    let env = Env::new();
    let remote = |extra: &str| {
        format!(
            "[secrets]\nK = {{ env = \"HOME\" }}\n\n[[git.remote]]\nname = \"origin\"\n{extra}\n"
        )
    };
    env.bottle(
        "g",
        &remote("url = \"git@github.com:a/b.git\"\nssh_key = \"K\""),
    );
    let e = env.err("g");
    assert!(e.contains("host_key") && e.contains("strictly"), "{e}");
    env.bottle(
        "g",
        &remote(
            "url = \"git@github.com:a/b.git\"\nssh_key = \"K\"\nhost_key = \"ssh-ed25519 nope\"",
        ),
    );
    assert!(env.err("g").contains("not base64"), "{}", env.err("g"));
    env.bottle("g", &remote("url = \"ssh://git@github.com/a/b.git\""));
    assert!(env.err("g").contains("needs `ssh_key`"));
    env.bottle(
        "g",
        &remote("url = \"https://github.com/a/b.git\"\nsecret = \"K\"\nhost_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGd2B9LqkN4cFQ7PqJ0yQ8v3m1ZsXo5bTt2aR6uW9eKc\""),
    );
    assert!(env.err("g").contains("are for ssh remotes"));
    env.bottle(
        "g",
        &remote("url = \"https://github.com/a/b.git\"\nsecret = \"K\"\npush = [\"heads/*\"]"),
    );
    let e = env.err("g");
    assert!(
        e.contains("bottles/g.toml:") && e.contains("not a ref pattern"),
        "{e}"
    );
    env.bottle(
        "g",
        &remote("url = \"https://github.com/a/b.git\"\nsecret = \"K\"\nallow_private = [\"10.0.0.0/33\"]"),
    );
    assert!(env.err("g").contains("not a network"));
    env.bottle(
        "g",
        &remote("url = \"git@github.com:a/b.git\"\nssh_key = \"K\"\nhost_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGd2B9LqkN4cFQ7PqJ0yQ8v3m1ZsXo5bTt2aR6uW9eKc\"\nforce_namespaces = [\"refs/heads/bottle/*\"]"),
    );
    let p = env.plan("g").expect("a valid ssh remote");
    assert_eq!(p.git.remotes[0].push, vec!["refs/heads/*".to_string()]);
    assert!(
        p.secrets.iter().any(|s| s.name == "K"),
        "the ssh key secret is delivered"
    );
}

/// `[[model]]` errors name the file, the line of the offending key and the key.
#[test]
fn model_fields_are_checked_with_the_line() {
    let env = Env::new();
    let head = "[[model]]\nname = \"coder\"\nengine = \"vllm\"\nmodel = \"Q/C\"\n";
    let cases: &[(&str, &str, &str)] = &[
        (
            "gpu = \"al\"\n",
            "bottles/m.toml:5: invalid value for `gpu`",
            "did you mean `all`?",
        ),
        (
            "gpu = []\n",
            "bottles/m.toml:5: invalid value for `gpu`",
            "empty list",
        ),
        (
            "gpu = [\"a b\"]\n",
            "bottles/m.toml:5: invalid value for `gpu`",
            "device id",
        ),
        (
            "volumes = [\"/srv/models:/models\"]\n",
            "bottles/m.toml:5: invalid value for `volumes`",
            "host paths",
        ),
        (
            "volumes = [\"a1:/m\", \"b1:/m\"]\n",
            "bottles/m.toml:5: invalid value for `volumes`",
            "two volumes",
        ),
        (
            "context = 100\n",
            "bottles/m.toml:5: invalid value for `context`",
            "out of range",
        ),
        (
            "context = 4096\nargs = [\"--max-model-len\", \"8192\"]\n",
            "bottles/m.toml:5: invalid value for `context`",
            "keep one",
        ),
        (
            "args = [\"--port\", \"9000\"]\n",
            "bottles/m.toml:5: invalid value for `args`",
            "set `port`",
        ),
        (
            "ready = { timeout = \"15 minutes\" }\n",
            "bottles/m.toml:5: invalid value for `timeout`",
            "not a duration",
        ),
        (
            "ready = { path = \"v1/models\" }\n",
            "bottles/m.toml:5: invalid value for `path`",
            "HTTP path",
        ),
        (
            "env = { HTTPS_PROXY = \"x\" }\n",
            "bottles/m.toml:5: invalid value for `HTTPS_PROXY`",
            "set by the launcher",
        ),
        (
            "secrets = [\"hf-token\"]\n",
            "bottles/m.toml:5: invalid value for `secrets`",
            "environment variable",
        ),
        (
            "image = \"Bad Image\"\n",
            "bottles/m.toml:5: invalid value for `image`",
            "image reference",
        ),
        (
            "contxt = 4096\n",
            "bottles/m.toml:5: unknown key `contxt`",
            "did you mean `context`?",
        ),
        (
            "ready = { pth = \"/x\" }\n",
            "bottles/m.toml:5: unknown key `pth`",
            "did you mean `path`?",
        ),
    ];
    for (extra, prefix, needle) in cases {
        env.bottle("m", &format!("{head}{extra}"));
        let e = env.err("m");
        assert!(e.starts_with(prefix) && e.contains(needle), "{extra}: {e}");
    }
    env.bottle(
        "m",
        "[[model]]\nname = \"x\"\nengine = \"olama\"\nmodel = \"q\"\n",
    );
    let e = env.err("m");
    assert!(
        e.starts_with("bottles/m.toml:3: invalid value for `engine`")
            && e.contains("did you mean `ollama`?"),
        "{e}"
    );
    env.bottle(
        "m",
        "[[model]]\nname = \"x\"\nengine = \"openai\"\nmodel = \"q\"\n",
    );
    let e = env.err("m");
    assert!(
        e.contains("invalid value for `image`") && e.contains("needs `image`"),
        "{e}"
    );
    env.bottle("m", "[[model]]\nname = \"x\"\nengine = \"openai\"\nmodel = \"q\"\nimage = \"a/b\"\ncontext = 4096\n");
    assert!(env.err("m").contains("no standard context flag"));
}

/// Model secrets are bottle secrets; only the model's egress routes use them, and the agent
/// gets no placeholder for a secret only a model uses.
#[test]
fn model_secrets_and_egress_routes() {
    let env = Env::new();
    let model = "[[model]]\nname = \"coder\"\nengine = \"vllm\"\nmodel = \"Q/C\"\nsecrets = [\"HF_TOKEN\"]\n\n[[model.egress]]\nid = \"hf\"\nhost = \"huggingface.co\"\nauth = { scheme = \"Bearer\", secret = \"HF_TOKEN\" }\n";
    env.bottle("m", model);
    let e = env.err("m");
    assert!(
        e.starts_with(
            "bottles/m.toml:5: model `coder` uses secret `HF_TOKEN`, which is not declared"
        ),
        "{e}"
    );
    env.bottle(
        "m",
        &format!("image = \"claude\"\n[secrets]\nHF_TOKEN = {{ env = \"HF_TOKEN\" }}\n\n{model}"),
    );
    let p = env.plan("m").unwrap();
    assert!(p.placeholders.is_empty(), "{:?}", p.placeholders);
    assert_eq!(p.secrets.len(), 1);
    assert_eq!(p.secrets[0].used_by, ["model `coder` egress route `hf`"]);
    assert!(p.secrets[0].placeholder_env.is_empty());
    assert!(
        p.policy.routes.is_empty(),
        "model routes are not the agent's"
    );
    let m = &p.models[0];
    assert_eq!(m.egress.len(), 1);
    assert_eq!(m.placeholders["HF_TOKEN"], "bottle-placeholder-HF_TOKEN");
    assert_eq!(p.model_env["ANTHROPIC_BASE_URL"], "http://coder:8000");
    let text = p.render_human();
    assert!(
        text.contains("ANTHROPIC_BASE_URL=http://coder:8000"),
        "{text}"
    );
    assert!(text.contains("NO_PROXY, no_proxy += coder"), "{text}");
    assert!(
        text.contains("hf                   huggingface.co"),
        "{text}"
    );
    // An egress route's secret must be one of the model's.
    env.bottle("m", "[secrets]\nHF_TOKEN = { env = \"HF_TOKEN\" }\n[[model]]\nname = \"coder\"\nengine = \"vllm\"\nmodel = \"Q\"\nsecrets = [\"HF_TOKN\"]\n[[model.egress]]\nhost = \"huggingface.co\"\nauth = { scheme = \"Bearer\", secret = \"HF_TOKEN\" }\n");
    let e = env.err("m");
    assert!(
        e.contains("`auth.secret`") && e.contains("not in the model's `secrets`"),
        "{e}"
    );
    // The proxy validates egress routes like the bottle's own.
    env.bottle("m", "[[model]]\nname = \"coder\"\nengine = \"vllm\"\nmodel = \"Q\"\n[[model.egress]]\nhost = \"exa mple\"\n");
    let e = env.err("m");
    assert!(
        e.starts_with("bottles/m.toml:6: route `exa mple (egress of model `coder`)` is refused"),
        "{e}"
    );
}

/// The bottle's `[env]` wins over what the agent would be told about the model.
#[test]
fn bottle_env_wins_over_model_wiring() {
    let env = Env::new();
    env.bottle("m", "image = \"codex\"\n[env]\nOPENAI_BASE_URL = \"http://elsewhere/v1\"\n[[model]]\nname = \"small\"\nengine = \"ollama\"\nmodel = \"q\"\n");
    let p = env.plan("m").unwrap();
    assert!(!p.model_env.contains_key("OPENAI_BASE_URL"));
    assert_eq!(p.env["OPENAI_BASE_URL"], "http://elsewhere/v1");
    assert_eq!(p.model_env["CODEX_OSS_BASE_URL"], "http://small:11434/v1");
    assert_eq!(p.model_env["OLLAMA_HOST"], "http://small:11434");
    let json = serde_json::to_string(&p).unwrap();
    assert!(
        json.contains("\"model_env\"") && json.contains("\"lists_model\":\"q\""),
        "{json}"
    );
    assert!(p
        .render_human()
        .contains("the bottle's own value kept: OPENAI_BASE_URL"));
}

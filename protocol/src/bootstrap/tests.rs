use std::io::Read;

use super::parse::{
    DNS_KEYS, GIT_KEYS, GIT_POLICY_KEYS, GIT_REMOTE_KEYS, MODELS_KEYS, MODEL_CLIENT_KEYS, TOP_KEYS,
};
use super::*;

const SECRET: &str = "ghp_TOPSECRETvalue1234567890";
const CERT: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n";

fn doc() -> serde_json::Value {
    serde_json::json!({
        "policy_toml": "[[route]]\nhost = \"example.com\"\n",
        "ca_cert_pem": CERT,
        "ca_key_pem": KEY,
        "secrets": { "GH_TOKEN": SECRET },
        "listen": "10.213.0.2:3128",
        "dns": { "listen": "10.213.0.2:53", "name": "Bottle-Sidecar.", "ip": "10.213.0.2" }
    })
}

fn git_doc() -> serde_json::Value {
    let mut v = doc();
    v["git"] = serde_json::json!({
        "listen": "10.213.0.2:8418",
        "state_dir": "/var/lib/bottle-git",
        "remotes": [{ "name": "origin", "url": "https://github.com/acme/w.git", "secret": "GH_TOKEN" }]
    });
    v
}

fn err_of(v: &serde_json::Value) -> String {
    Bootstrap::parse(v.to_string().as_bytes())
        .unwrap_err()
        .to_string()
}

/// Everything set, every optional field present: what the launcher could send at most.
fn full() -> Bootstrap {
    let mut secrets = BTreeMap::new();
    secrets.insert("GH_TOKEN".to_string(), Zeroizing::new(SECRET.to_string()));
    secrets.insert(
        "DEPLOY_KEY".to_string(),
        Zeroizing::new("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n".to_string()),
    );
    Bootstrap {
        policy_toml: "[[route]]\nhost = \"example.com\"\n".into(),
        ca_cert_pem: CERT.into(),
        ca_key_pem: Zeroizing::new(KEY.into()),
        secrets,
        listen: "10.213.0.2:3128".parse().unwrap(),
        dns: Some(Dns {
            listen: "10.213.0.2:53".parse().unwrap(),
            name: "bottle-sidecar".into(),
            ip: Ipv4Addr::new(10, 213, 0, 2),
            hosts: BTreeMap::from([("coder".to_string(), Ipv4Addr::new(10, 213, 1, 4))]),
        }),
        lifeline: true,
        git: Some(Git {
            listen: "10.213.0.2:8418".parse().unwrap(),
            state_dir: "/var/lib/bottle-git".into(),
            remotes: vec![
                GitRemote {
                    name: "origin".into(),
                    url: "https://github.com/acme/w.git".into(),
                    secret: Some("GH_TOKEN".into()),
                    username: Some("x-access-token".into()),
                    ssh_key: None,
                    host_key: None,
                    allow_private: vec!["10.1.0.0/16".into(), "fd00::/8".into()],
                    policy: GitPushPolicy {
                        push: vec!["refs/heads/bottle/*".into()],
                        allow_delete: true,
                        allow_tags: true,
                        allow_force: false,
                        force_namespaces: vec!["refs/heads/bottle/*".into()],
                    },
                },
                GitRemote {
                    name: "deploy".into(),
                    url: "ssh://git@git.example/srv/r.git".into(),
                    secret: None,
                    username: None,
                    ssh_key: Some("DEPLOY_KEY".into()),
                    host_key: Some("ssh-ed25519 AAAAC3Nza".into()),
                    allow_private: vec![],
                    policy: GitPushPolicy::default(),
                },
            ],
            max_request_bytes: Some(1 << 20),
            max_blob_bytes: Some(1 << 16),
            fetch_timeout_secs: Some(30),
        }),
        models: Some(ModelEgress {
            listen: "10.213.1.2:3129".parse().unwrap(),
            clients: vec![ModelClient {
                name: "coder".into(),
                ip: Ipv4Addr::new(10, 213, 1, 4),
                policy_toml: "[[route]]\nhost = \"huggingface.co\"\n".into(),
                secrets: vec!["GH_TOKEN".into()],
            }],
        }),
    }
}

#[test]
fn what_the_launcher_serialises_the_sidecar_parses_back_unchanged() {
    let sent = full();
    let json = sent.to_json().unwrap();
    assert_eq!(json.last(), Some(&b'\n'), "one line");
    assert_eq!(json.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
    let got = Bootstrap::parse(&json).unwrap();
    assert_eq!(got.policy_toml, sent.policy_toml);
    assert_eq!(got.ca_cert_pem, sent.ca_cert_pem);
    assert_eq!(got.ca_key_pem.as_str(), sent.ca_key_pem.as_str());
    assert_eq!(
        got.secrets
            .iter()
            .map(|(k, v)| (k, v.as_str()))
            .collect::<Vec<_>>(),
        sent.secrets
            .iter()
            .map(|(k, v)| (k, v.as_str()))
            .collect::<Vec<_>>()
    );
    assert_eq!(got.listen, sent.listen);
    assert_eq!(got.dns, sent.dns);
    assert_eq!(got.lifeline, sent.lifeline);
    assert_eq!(got.git, sent.git);
    assert_eq!(got.models, sent.models);
    // And through read_from, as the sidecar reads its stdin.
    let again = Bootstrap::read_from(std::io::Cursor::new(json.to_vec())).unwrap();
    assert_eq!(again.git, sent.git);

    // The smallest document: no dns, no git, no secrets.
    let mut small = full();
    small.dns = None;
    small.git = None;
    small.models = None;
    small.secrets.clear();
    small.lifeline = false;
    let got = Bootstrap::parse(&small.to_json().unwrap()).unwrap();
    assert!(got.dns.is_none() && got.git.is_none() && got.secrets.is_empty() && !got.lifeline);
}

/// The keys of `v` (an object).
fn keys(v: &serde_json::Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn assert_same_keys(emitted: &serde_json::Value, known: &[&str], what: &str) {
    let mut emitted = keys(emitted);
    emitted.sort();
    let mut known: Vec<String> = known.iter().map(|k| k.to_string()).collect();
    known.sort();
    assert_eq!(
        emitted, known,
        "{what}: the serialiser and the parser disagree on the keys (a field added on one side only?)"
    );
}

#[test]
fn every_key_the_serialiser_emits_is_one_the_parser_knows() {
    let v: serde_json::Value = serde_json::from_slice(&full().to_json().unwrap()).unwrap();
    // With every optional section set, the emitted keys are exactly the known ones: a field
    // only the serialiser has is refused by the parser, one only the parser has is never sent.
    assert_same_keys(&v, &TOP_KEYS, "document");
    assert_same_keys(&v["dns"], &DNS_KEYS, "dns");
    assert_same_keys(&v["git"], &GIT_KEYS, "git");
    let origin = &v["git"]["remotes"][0];
    let mut remote_keys = keys(origin);
    remote_keys.extend(keys(&v["git"]["remotes"][1]));
    remote_keys.sort();
    remote_keys.dedup();
    let mut known: Vec<String> = GIT_REMOTE_KEYS.iter().map(|k| k.to_string()).collect();
    known.sort();
    assert_eq!(remote_keys, known, "git.remotes");
    assert_same_keys(&origin["policy"], &GIT_POLICY_KEYS, "git.remotes.N.policy");
    assert_same_keys(&v["models"], &MODELS_KEYS, "models");
    assert_same_keys(
        &v["models"]["clients"][0],
        &MODEL_CLIENT_KEYS,
        "models.clients.N",
    );
}

#[test]
fn model_clients_are_validated_by_path() {
    let client = || {
        serde_json::json!({
            "name": "coder", "ip": "10.213.1.4",
            "policy_toml": "[[route]]\nhost = \"huggingface.co\"\n", "secrets": ["GH_TOKEN"]
        })
    };
    let with = |clients: serde_json::Value| {
        let mut v = doc();
        v["models"] = serde_json::json!({ "listen": "10.213.1.2:3129", "clients": clients });
        v
    };
    let b = Bootstrap::parse(with(serde_json::json!([client()])).to_string().as_bytes()).unwrap();
    let m = b.models.unwrap();
    assert_eq!(m.listen.to_string(), "10.213.1.2:3129");
    assert_eq!(m.clients[0].ip, Ipv4Addr::new(10, 213, 1, 4));
    assert_eq!(m.clients[0].secrets, ["GH_TOKEN"]);
    let cases: Vec<(serde_json::Value, &str, &str)> = vec![
        (serde_json::json!([]), "models.clients", "empty"),
        (
            serde_json::json!([client(), client()]),
            "models.clients.1",
            "repeats",
        ),
        (
            serde_json::json!([{ "ip": "10.213.1.4", "policy_toml": "x" }]),
            "models.clients.0.name",
            "missing",
        ),
        (
            serde_json::json!([{ "name": "a b", "ip": "10.213.1.4", "policy_toml": "x" }]),
            "models.clients.0.name",
            "DNS label",
        ),
        (
            serde_json::json!([{ "name": "a", "ip": "nope", "policy_toml": "x" }]),
            "models.clients.0.ip",
            "IPv4",
        ),
        (
            serde_json::json!([{ "name": "a", "ip": "10.0.0.4", "policy_toml": " " }]),
            "models.clients.0.policy_toml",
            "empty",
        ),
        (
            serde_json::json!([{ "name": "a", "ip": "10.0.0.4", "policy_toml": "x", "secrets": ["NOPE"] }]),
            "models.clients.0.secrets.0",
            "not in `secrets`",
        ),
        (
            serde_json::json!([{ "name": "a", "ip": "10.0.0.4", "policy_toml": "x", "token": SECRET }]),
            "models.clients.0.token",
            "unknown field",
        ),
    ];
    for (clients, path, want) in cases {
        let e = err_of(&with(clients));
        assert!(e.contains(path) && e.contains(want), "{path}: {e}");
        assert!(!e.contains(SECRET), "{e}");
    }
}

#[test]
fn debug_hides_secrets_and_the_ca_key() {
    let b = full();
    let dbg = format!("{b:?}");
    assert!(dbg.contains("GH_TOKEN"), "{dbg}");
    assert!(!dbg.contains(SECRET) && !dbg.contains("BBBB"), "{dbg}");
}

#[test]
fn good_document_parses() {
    let b = Bootstrap::parse(doc().to_string().as_bytes()).unwrap();
    assert_eq!(b.listen, "10.213.0.2:3128".parse().unwrap());
    assert_eq!(b.secrets["GH_TOKEN"].as_str(), SECRET);
    let dns = b.dns.as_ref().unwrap();
    assert_eq!(dns.name, "bottle-sidecar");
    assert_eq!(dns.ip, Ipv4Addr::new(10, 213, 0, 2));
    let dbg = format!("{b:?}");
    assert!(dbg.contains("GH_TOKEN") && !dbg.contains(SECRET) && !dbg.contains("BBBB"));
}

#[test]
fn dns_hosts_are_labels_and_addresses() {
    let mut v = doc();
    v["dns"]["hosts"] = serde_json::json!({ "Coder": "10.213.1.4" });
    let b = Bootstrap::parse(v.to_string().as_bytes()).unwrap();
    assert_eq!(b.dns.unwrap().hosts["coder"], Ipv4Addr::new(10, 213, 1, 4));
    v["dns"]["hosts"] = serde_json::json!({ "a.b": "10.213.1.4" });
    assert!(err_of(&v).contains("dns.hosts"), "{}", err_of(&v));
    v["dns"]["hosts"] = serde_json::json!({ "coder": "nope" });
    assert!(err_of(&v).contains("dns.hosts.coder"), "{}", err_of(&v));
    v["dns"]["hosts"] = serde_json::json!(["coder"]);
    assert!(err_of(&v).contains("must be an object"), "{}", err_of(&v));
}

#[test]
fn lifeline_is_an_optional_boolean() {
    assert!(
        !Bootstrap::parse(doc().to_string().as_bytes())
            .unwrap()
            .lifeline
    );
    let mut v = doc();
    v["lifeline"] = serde_json::json!(true);
    assert!(Bootstrap::parse(v.to_string().as_bytes()).unwrap().lifeline);
    v["lifeline"] = serde_json::json!("yes");
    let e = err_of(&v);
    assert!(e.contains("lifeline") && e.contains("boolean"), "{e}");
}

#[test]
fn dns_and_secrets_are_optional() {
    let mut v = doc();
    v.as_object_mut().unwrap().remove("dns");
    v.as_object_mut().unwrap().remove("secrets");
    let b = Bootstrap::parse(v.to_string().as_bytes()).unwrap();
    assert!(b.dns.is_none() && b.secrets.is_empty());
}

#[test]
fn bad_json_reports_position_not_text() {
    let text = format!("{{\"secrets\": {{\"A\": \"{SECRET}\"}} \"listen\" }}");
    let e = Bootstrap::parse(text.as_bytes()).unwrap_err().to_string();
    assert!(e.contains("invalid JSON at line 1"), "{e}");
    assert!(!e.contains(SECRET), "{e}");
    let e = Bootstrap::parse(b"{\"policy_toml\": \"abc")
        .unwrap_err()
        .to_string();
    assert!(e.contains("EOF"), "{e}");
    assert!(matches!(
        Bootstrap::parse(b"  \n"),
        Err(BootstrapError::Empty)
    ));
    assert!(matches!(
        Bootstrap::parse(format!("{} {}", doc(), doc()).as_bytes()),
        Err(BootstrapError::Trailing)
    ));
    let e = Bootstrap::parse(b"[1,2]").unwrap_err().to_string();
    assert!(e.contains("must be a JSON object"), "{e}");
}

#[test]
fn missing_and_mistyped_fields_are_named() {
    for key in ["policy_toml", "ca_cert_pem", "ca_key_pem", "listen"] {
        let mut v = doc();
        v.as_object_mut().unwrap().remove(key);
        let e = err_of(&v);
        assert!(
            e.contains(&format!("`{key}`")) && e.contains("missing"),
            "{e}"
        );
    }
    let mut v = doc();
    v["dns"].as_object_mut().unwrap().remove("ip");
    assert!(err_of(&v).contains("`dns.ip`: missing"));
    let mut v = doc();
    v["listen"] = serde_json::json!(3128);
    assert!(err_of(&v).contains("`listen`: must be a string, got a number"));
    let mut v = doc();
    v["listen"] = serde_json::json!("localhost");
    assert!(err_of(&v).contains("not an IP:port"));
    let mut v = doc();
    v["dns"]["ip"] = serde_json::json!("::1");
    assert!(err_of(&v).contains("`dns.ip`"));
    let mut v = doc();
    v["ca_key_pem"] = serde_json::json!("nope");
    assert!(err_of(&v).contains("`ca_key_pem`: is not a PEM private key"));
    let mut v = doc();
    v["extra"] = serde_json::json!(1);
    assert!(err_of(&v).contains("`extra`: unknown field"));
    let mut v = doc();
    v["dns"]["port"] = serde_json::json!(1);
    assert!(err_of(&v).contains("`dns.port`: unknown field"));
}

#[test]
fn secret_errors_never_echo_values() {
    let mut v = doc();
    v["secrets"] = serde_json::json!(SECRET);
    let e = err_of(&v);
    assert!(
        e.contains("`secrets`: must be an object") && !e.contains(SECRET),
        "{e}"
    );
    let mut v = doc();
    v["secrets"]["OTHER"] = serde_json::json!(["x", SECRET]);
    let e = err_of(&v);
    assert!(
        e.contains("`secrets.OTHER`: must be a string") && !e.contains(SECRET),
        "{e}"
    );
    let mut v = doc();
    v["secrets"]["BIG"] = serde_json::json!("x".repeat(MAX_SECRET_BYTES + 1));
    assert!(err_of(&v).contains("`secrets.BIG`: is longer than"));
    let mut v = doc();
    v["secrets"][SECRET] = serde_json::json!("x");
    // A valid-looking name is fine to show; an invalid one is not echoed.
    let mut w = doc();
    w["secrets"]["bad name ghp_x"] = serde_json::json!("x");
    let e = err_of(&w);
    assert!(e.contains("`secrets`") && !e.contains("ghp_x"), "{e}");
    assert!(Bootstrap::parse(v.to_string().as_bytes()).is_ok());
}

#[test]
fn no_error_echoes_a_value_of_the_document() {
    // A secret-looking value in every place a value can be wrong.
    let mut cases = Vec::new();
    for key in ["listen", "policy_toml", "ca_cert_pem", "ca_key_pem"] {
        let mut v = doc();
        v[key] = serde_json::json!(if key == "policy_toml" { " " } else { SECRET });
        cases.push(v);
    }
    for key in ["listen", "name", "ip"] {
        let mut v = doc();
        v["dns"][key] = serde_json::json!(SECRET);
        cases.push(v);
    }
    let mut v = doc();
    v[SECRET] = serde_json::json!(1);
    cases.push(v);
    let mut v = doc();
    v["ghp_unknown_key_with_secret_text_1234567890"] = serde_json::json!(1);
    cases.push(v);
    for (key, val) in [
        ("listen", serde_json::json!(SECRET)),
        ("state_dir", serde_json::json!(SECRET)),
        ("remotes", serde_json::json!(SECRET)),
        ("max_blob_bytes", serde_json::json!(SECRET)),
        ("max_blob_bytes", serde_json::json!(-1)),
    ] {
        let mut v = git_doc();
        v["git"][key] = val;
        cases.push(v);
    }
    for (key, val) in [
        ("name", serde_json::json!(5)),
        ("secret", serde_json::json!(SECRET)),
        ("ssh_key", serde_json::json!(SECRET)),
        ("allow_private", serde_json::json!([SECRET])),
        ("policy", serde_json::json!({ "allow_force": SECRET })),
        ("policy", serde_json::json!({ "push": [SECRET, 1] })),
        ("policy", serde_json::json!({ SECRET: true })),
    ] {
        let mut v = git_doc();
        v["git"]["remotes"][0][key] = val;
        cases.push(v);
    }
    for v in cases {
        let e = err_of(&v);
        assert!(e.starts_with("bootstrap: field `"), "{e}");
        assert!(!e.contains("ghp_"), "{e}");
    }
}

#[test]
fn the_git_section_is_checked_field_by_field() {
    let b = Bootstrap::parse(git_doc().to_string().as_bytes()).unwrap();
    let git = b.git.unwrap();
    assert_eq!(git.listen, "10.213.0.2:8418".parse().unwrap());
    assert_eq!(git.remotes[0].policy, GitPushPolicy::default());
    assert!(git.remotes[0].allow_private.is_empty());
    assert_eq!(git.max_request_bytes, None);

    let mut v = git_doc();
    v["git"]["remotes"][0]["secret"] = serde_json::json!(5);
    assert!(err_of(&v).contains("`git.remotes.0.secret`: must be a string, got a number"));
    let mut v = git_doc();
    v["git"]["remotes"][0]["policy"] = serde_json::json!({"allow_force": "ghp_abc"});
    let e = err_of(&v);
    assert!(
        e.contains("`git.remotes.0.policy.allow_force`: must be a boolean")
            && !e.contains("ghp_abc"),
        "{e}"
    );
    let mut v = git_doc();
    v["git"]["remotes"][0]["policy"] = serde_json::json!({"allow_tags": true});
    let b = Bootstrap::parse(v.to_string().as_bytes()).unwrap();
    let p = &b.git.as_ref().unwrap().remotes[0].policy;
    assert!(p.allow_tags && p.push == GitPushPolicy::default().push);
    let mut v = git_doc();
    v["git"]["remotes"][0]["secret"] = serde_json::json!("NOT_THERE");
    assert!(err_of(&v).contains("`git.remotes.0.secret`: names a secret that is not in `secrets`"));
    let mut v = git_doc();
    v["git"]["remotes"][0]["allow_private"] = serde_json::json!(["10.0.0.0/8", "10.1.2.3"]);
    assert!(err_of(&v).contains("`git.remotes.0.allow_private.1`: is not a network"));
    let mut v = git_doc();
    v["git"]["remotes"][0]["mirror"] = serde_json::json!(true);
    assert!(err_of(&v).contains("`git.remotes.0.mirror`: unknown field"));
    let mut v = git_doc();
    v["git"].as_object_mut().unwrap().remove("remotes");
    assert!(err_of(&v).contains("`git.remotes`: missing"));
    let mut v = git_doc();
    v["git"]["state_dir"] = serde_json::json!("relative");
    assert!(err_of(&v).contains("`git.state_dir`: must be an absolute path"));
    let mut v = git_doc();
    v["git"]["fetch_timeout_secs"] = serde_json::json!(1.5);
    assert!(err_of(&v).contains("`git.fetch_timeout_secs`: must be a non-negative integer"));
}

#[test]
fn oversized_documents_are_refused() {
    let big = vec![b' '; MAX_BOOTSTRAP_BYTES + 1];
    assert!(matches!(
        Bootstrap::parse(&big),
        Err(BootstrapError::TooLarge { .. })
    ));
    let reader = std::io::repeat(b' ').take((MAX_BOOTSTRAP_BYTES + 10) as u64);
    let e = Bootstrap::read_from(reader).unwrap_err();
    assert!(
        e.to_string().contains(&MAX_BOOTSTRAP_BYTES.to_string()),
        "{e}"
    );
}

#[test]
fn read_from_stops_after_one_document_without_eof() {
    // A reader that would block forever after the document: simulate with a chain whose tail
    // panics if read.
    struct Boom;
    impl Read for Boom {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            panic!("read past the document");
        }
    }
    let text = format!("{}\n", doc());
    let b = Bootstrap::read_from(std::io::Cursor::new(text.into_bytes()).chain(Boom)).unwrap();
    assert_eq!(b.secrets.len(), 1);
    // A document larger than the first buffer arrives in many reads.
    let mut v = doc();
    v["secrets"]["BIG"] = serde_json::json!("y".repeat(MAX_SECRET_BYTES));
    let text = format!("{v}\n");
    let b = Bootstrap::read_from(std::io::Cursor::new(text.into_bytes()).chain(Boom)).unwrap();
    assert_eq!(b.secrets["BIG"].len(), MAX_SECRET_BYTES);
}

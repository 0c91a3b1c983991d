//! The value-free parser of [`Bootstrap`]: a walk over a `serde_json::Value` with explicit key
//! lists. Every error is built from a field path (static key names, array indices and
//! validated secret names) and fixed text — never from a string or number of the document.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde_json::{Map, Value};
use zeroize::{Zeroize, Zeroizing};

use super::{
    Bootstrap, BootstrapError, Dns, Git, GitPushPolicy, GitRemote, ModelClient, ModelEgress,
    MAX_BOOTSTRAP_BYTES, MAX_SECRET_BYTES,
};

/// The keys of the document.
pub(crate) const TOP_KEYS: [&str; 9] = [
    "policy_toml",
    "ca_cert_pem",
    "ca_key_pem",
    "secrets",
    "listen",
    "dns",
    "lifeline",
    "git",
    "models",
];
/// The keys of `models`.
pub(crate) const MODELS_KEYS: [&str; 2] = ["listen", "clients"];
/// The keys of each of `models.clients`.
pub(crate) const MODEL_CLIENT_KEYS: [&str; 4] = ["name", "ip", "policy_toml", "secrets"];
/// The keys of `dns`.
pub(crate) const DNS_KEYS: [&str; 4] = ["listen", "name", "ip", "hosts"];
/// The keys of `git`.
pub(crate) const GIT_KEYS: [&str; 6] = [
    "listen",
    "state_dir",
    "remotes",
    "max_request_bytes",
    "max_blob_bytes",
    "fetch_timeout_secs",
];
/// The keys of each of `git.remotes`.
pub(crate) const GIT_REMOTE_KEYS: [&str; 8] = [
    "name",
    "url",
    "secret",
    "username",
    "ssh_key",
    "host_key",
    "allow_private",
    "policy",
];
/// The keys of `git.remotes.N.policy`.
pub(crate) const GIT_POLICY_KEYS: [&str; 5] = [
    "push",
    "allow_delete",
    "allow_tags",
    "allow_force",
    "force_namespaces",
];

fn field(field: impl Into<String>, problem: impl Into<String>) -> BootstrapError {
    BootstrapError::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

pub(super) fn parse(bytes: &[u8]) -> Result<Bootstrap, BootstrapError> {
    if bytes.len() > MAX_BOOTSTRAP_BYTES {
        return Err(BootstrapError::TooLarge {
            limit: MAX_BOOTSTRAP_BYTES,
        });
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(BootstrapError::Empty);
    }
    let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
    let mut value = match stream.next() {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(syntax(&e)),
        None => return Err(BootstrapError::Empty),
    };
    let rest = &bytes[stream.byte_offset()..];
    let result = if rest.iter().all(u8::is_ascii_whitespace) {
        from_value(&mut value)
    } else {
        Err(BootstrapError::Trailing)
    };
    wipe(&mut value);
    result
}

/// Whether `buf` already holds one complete JSON value (followed by anything).
pub(super) fn is_complete(buf: &[u8]) -> bool {
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<serde::de::IgnoredAny>();
    matches!(it.next(), Some(Ok(_)))
}

fn syntax(e: &serde_json::Error) -> BootstrapError {
    use serde_json::error::Category;
    // Parsing into a `Value` fails only with syntax / EOF errors, whose messages are fixed
    // phrases plus a position; strip the position (reported separately). Anything else gets a
    // fixed phrase, so no document text can come through.
    let kind = match e.classify() {
        Category::Syntax | Category::Eof => e
            .to_string()
            .split(" at line ")
            .next()
            .unwrap_or("syntax error")
            .to_string(),
        Category::Data | Category::Io => "not a JSON document".to_string(),
    };
    BootstrapError::Syntax {
        line: e.line(),
        column: e.column(),
        kind,
    }
}

/// Overwrites every string in `v` (keys included) before it is dropped.
fn wipe(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(wipe),
        Value::Object(m) => {
            let taken = std::mem::take(m);
            for (mut k, mut v) in taken {
                k.zeroize();
                wipe(&mut v);
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Refuses keys outside `allowed`. The unknown key is shown only when it looks like a field
/// name (lower-case ASCII, digits, `_`; at most 40 bytes), never arbitrary text.
fn check_keys(
    m: &Map<String, Value>,
    allowed: &[&str],
    prefix: &str,
) -> Result<(), BootstrapError> {
    for k in m.keys() {
        if !allowed.contains(&k.as_str()) {
            let plain = !k.is_empty()
                && k.len() <= 40
                && k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            let shown = if plain {
                k.as_str()
            } else {
                "(a key that is not a field name)"
            };
            return Err(field(
                format!("{prefix}{shown}"),
                format!("unknown field (expected one of: {})", allowed.join(", ")),
            ));
        }
    }
    Ok(())
}

/// Takes an optional string out of `m` (leaving an empty string behind, so wiping still works).
fn take_opt_string(
    m: &mut Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<String>, BootstrapError> {
    match m.get_mut(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(std::mem::take(s))),
        Some(other) => Err(field(
            path,
            format!("must be a string, got {}", type_name(other)),
        )),
    }
}

/// Takes a required string out of `m`.
fn take_string(
    m: &mut Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<String, BootstrapError> {
    take_opt_string(m, key, path)?.ok_or_else(|| field(path, "missing (required)"))
}

fn take_addr(
    m: &mut Map<String, Value>,
    key: &str,
    path: &str,
    example: &str,
) -> Result<SocketAddr, BootstrapError> {
    let text = Zeroizing::new(take_string(m, key, path)?);
    text.parse()
        .map_err(|_| field(path, format!("is not an IP:port address like {example}")))
}

fn opt_bool(m: &Map<String, Value>, key: &str, path: &str) -> Result<Option<bool>, BootstrapError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(field(
            path,
            format!("must be a boolean, got {}", type_name(other)),
        )),
    }
}

fn opt_u64(m: &Map<String, Value>, key: &str, path: &str) -> Result<Option<u64>, BootstrapError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| field(path, "must be a non-negative integer")),
        Some(other) => Err(field(
            path,
            format!("must be a non-negative integer, got {}", type_name(other)),
        )),
    }
}

/// Takes an optional array of strings out of `m`.
fn take_strings(
    m: &mut Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<Vec<String>>, BootstrapError> {
    match m.get_mut(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter_mut()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(std::mem::take(s)),
                other => Err(field(
                    format!("{path}.{i}"),
                    format!("must be a string, got {}", type_name(other)),
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(field(
            path,
            format!("must be an array of strings, got {}", type_name(other)),
        )),
    }
}

fn object<'v>(
    v: &'v mut Value,
    path: &str,
    shape: &str,
) -> Result<&'v mut Map<String, Value>, BootstrapError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(field(
            path,
            format!("must be an object {shape}, got {}", type_name(other)),
        )),
    }
}

/// `address/prefix` with a prefix no longer than the address (what `ipnet::IpNet` parses).
fn is_network(s: &str) -> bool {
    let Some((addr, prefix)) = s.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => prefix <= 32,
        Ok(IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

fn from_value(v: &mut Value) -> Result<Bootstrap, BootstrapError> {
    let m = match v {
        Value::Object(m) => m,
        other => {
            return Err(field(
                "(document)",
                format!("must be a JSON object, got {}", type_name(other)),
            ))
        }
    };
    check_keys(m, &TOP_KEYS, "")?;

    let policy_toml = take_string(m, "policy_toml", "policy_toml")?;
    if policy_toml.trim().is_empty() {
        return Err(field(
            "policy_toml",
            "is empty; it must hold the policy file text",
        ));
    }
    let ca_cert_pem = take_string(m, "ca_cert_pem", "ca_cert_pem")?;
    if !ca_cert_pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(field(
            "ca_cert_pem",
            "is not a PEM certificate (no BEGIN CERTIFICATE line)",
        ));
    }
    let ca_key_pem = Zeroizing::new(take_string(m, "ca_key_pem", "ca_key_pem")?);
    if !(ca_key_pem.contains("-----BEGIN") && ca_key_pem.contains("PRIVATE KEY-----")) {
        return Err(field(
            "ca_key_pem",
            "is not a PEM private key (no BEGIN … PRIVATE KEY line)",
        ));
    }
    let secrets = secrets(m)?;
    let listen = take_addr(m, "listen", "listen", "10.213.0.2:3128")?;
    let dns = match m.get_mut("dns") {
        None | Some(Value::Null) => None,
        Some(v) => Some(dns(object(v, "dns", "{listen, name, ip}")?)?),
    };
    let lifeline = opt_bool(m, "lifeline", "lifeline")?.unwrap_or(false);
    let git = match m.get_mut("git") {
        None | Some(Value::Null) => None,
        Some(v) => Some(git(
            object(v, "git", "{listen, state_dir, remotes, …}")?,
            &secrets,
        )?),
    };
    let models = match m.get_mut("models") {
        None | Some(Value::Null) => None,
        Some(v) => Some(models(object(v, "models", "{listen, clients}")?, &secrets)?),
    };
    Ok(Bootstrap {
        policy_toml,
        ca_cert_pem,
        ca_key_pem,
        secrets,
        listen,
        dns,
        lifeline,
        git,
        models,
    })
}

fn models(
    mm: &mut Map<String, Value>,
    secrets: &BTreeMap<String, Zeroizing<String>>,
) -> Result<ModelEgress, BootstrapError> {
    check_keys(mm, &MODELS_KEYS, "models.")?;
    let listen = take_addr(mm, "listen", "models.listen", "10.213.1.2:3129")?;
    let items = match mm.get_mut("clients") {
        None | Some(Value::Null) => return Err(field("models.clients", "missing (required)")),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(field("models.clients", "is empty (omit `models` instead)"))
        }
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(field(
                "models.clients",
                format!("must be an array of objects, got {}", type_name(other)),
            ))
        }
    };
    let mut clients: Vec<ModelClient> = Vec::with_capacity(items.len());
    for (i, item) in items.iter_mut().enumerate() {
        let prefix = format!("models.clients.{i}");
        let cm = object(item, &prefix, "{name, ip, policy_toml, secrets}")?;
        let c = model_client(cm, &prefix, secrets)?;
        if clients.iter().any(|o| o.name == c.name || o.ip == c.ip) {
            return Err(field(
                prefix,
                "repeats the name or address of an earlier client",
            ));
        }
        clients.push(c);
    }
    Ok(ModelEgress { listen, clients })
}

fn model_client(
    cm: &mut Map<String, Value>,
    prefix: &str,
    secrets: &BTreeMap<String, Zeroizing<String>>,
) -> Result<ModelClient, BootstrapError> {
    check_keys(cm, &MODEL_CLIENT_KEYS, &format!("{prefix}."))?;
    let p = |key: &str| format!("{prefix}.{key}");
    let name = take_string(cm, "name", &p("name"))?;
    let label_ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !label_ok {
        return Err(field(
            p("name"),
            "is not a DNS label (A-Z a-z 0-9 -, at most 63 bytes)",
        ));
    }
    let ip: Ipv4Addr = take_string(cm, "ip", &p("ip"))?
        .parse()
        .map_err(|_| field(p("ip"), "is not an IPv4 address"))?;
    let policy_toml = take_string(cm, "policy_toml", &p("policy_toml"))?;
    if policy_toml.trim().is_empty() {
        return Err(field(
            p("policy_toml"),
            "is empty; it must hold the model's policy file text",
        ));
    }
    let names = take_strings(cm, "secrets", &p("secrets"))?.unwrap_or_default();
    if let Some(i) = names.iter().position(|n| !secrets.contains_key(n)) {
        return Err(field(
            format!("{prefix}.secrets.{i}"),
            "names a secret that is not in `secrets`",
        ));
    }
    Ok(ModelClient {
        name,
        ip,
        policy_toml,
        secrets: names,
    })
}

fn secrets(
    m: &mut Map<String, Value>,
) -> Result<BTreeMap<String, Zeroizing<String>>, BootstrapError> {
    let mut secrets = BTreeMap::new();
    let sm = match m.get_mut("secrets") {
        None | Some(Value::Null) => return Ok(secrets),
        Some(Value::Object(sm)) => sm,
        Some(other) => {
            return Err(field(
                "secrets",
                format!(
                    "must be an object of name → value strings, got {}",
                    type_name(other)
                ),
            ))
        }
    };
    for (name, val) in sm.iter_mut() {
        let valid_name = !name.is_empty()
            && name.len() <= 128
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid_name {
            return Err(field(
                "secrets",
                "a secret name is empty, longer than 128 bytes, or has characters other than A-Z a-z 0-9 _ - .",
            ));
        }
        // A valid name is shown; the value never is.
        let path = format!("secrets.{name}");
        match val {
            Value::String(s) if s.is_empty() => return Err(field(path, "is empty")),
            Value::String(s) if s.len() > MAX_SECRET_BYTES => {
                return Err(field(
                    path,
                    format!("is longer than the limit of {MAX_SECRET_BYTES} bytes"),
                ));
            }
            Value::String(s) => {
                secrets.insert(name.clone(), Zeroizing::new(std::mem::take(s)));
            }
            other => {
                return Err(field(
                    path,
                    format!("must be a string, got {}", type_name(other)),
                ));
            }
        }
    }
    Ok(secrets)
}

fn dns(dm: &mut Map<String, Value>) -> Result<Dns, BootstrapError> {
    check_keys(dm, &DNS_KEYS, "dns.")?;
    let listen = take_addr(dm, "listen", "dns.listen", "10.213.0.2:53")?;
    let name = take_string(dm, "name", "dns.name")?;
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !name_ok {
        return Err(field(
            "dns.name",
            "is not a valid DNS name (labels of A-Z a-z 0-9 -, at most 63 bytes each)",
        ));
    }
    let ip: Ipv4Addr = take_string(dm, "ip", "dns.ip")?
        .parse()
        .map_err(|_| field("dns.ip", "is not an IPv4 address"))?;
    let mut hosts = BTreeMap::new();
    match dm.get("hosts") {
        None | Some(Value::Null) => {}
        Some(Value::Object(hm)) => {
            for (host, addr) in hm {
                let label_ok = !host.is_empty()
                    && host.len() <= 63
                    && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
                if !label_ok {
                    return Err(field(
                        "dns.hosts",
                        "a name is not a DNS label (A-Z a-z 0-9 -, at most 63 bytes)",
                    ));
                }
                let ip: Ipv4Addr = match addr {
                    Value::String(a) => a.parse().map_err(|_| {
                        field(format!("dns.hosts.{host}"), "is not an IPv4 address")
                    })?,
                    other => {
                        return Err(field(
                            format!("dns.hosts.{host}"),
                            format!("must be an IPv4 address string, got {}", type_name(other)),
                        ))
                    }
                };
                hosts.insert(host.to_ascii_lowercase(), ip);
            }
        }
        Some(other) => {
            return Err(field(
                "dns.hosts",
                format!(
                    "must be an object of name → address, got {}",
                    type_name(other)
                ),
            ))
        }
    }
    Ok(Dns {
        listen,
        name: name.trim_end_matches('.').to_ascii_lowercase(),
        ip,
        hosts,
    })
}

fn git(
    gm: &mut Map<String, Value>,
    secrets: &BTreeMap<String, Zeroizing<String>>,
) -> Result<Git, BootstrapError> {
    check_keys(gm, &GIT_KEYS, "git.")?;
    let listen = take_addr(gm, "listen", "git.listen", "10.213.0.2:8418")?;
    let state_dir = PathBuf::from(take_string(gm, "state_dir", "git.state_dir")?);
    if !state_dir.is_absolute() {
        return Err(field("git.state_dir", "must be an absolute path"));
    }
    let max_request_bytes = opt_u64(gm, "max_request_bytes", "git.max_request_bytes")?;
    let max_blob_bytes = opt_u64(gm, "max_blob_bytes", "git.max_blob_bytes")?;
    let fetch_timeout_secs = opt_u64(gm, "fetch_timeout_secs", "git.fetch_timeout_secs")?;
    let items = match gm.get_mut("remotes") {
        None | Some(Value::Null) => return Err(field("git.remotes", "missing (required)")),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(field(
                "git.remotes",
                format!("must be an array of objects, got {}", type_name(other)),
            ))
        }
    };
    let mut remotes = Vec::with_capacity(items.len());
    for (i, item) in items.iter_mut().enumerate() {
        let prefix = format!("git.remotes.{i}");
        let r = object(item, &prefix, "{name, url, …}")?;
        remotes.push(git_remote(r, &prefix, secrets)?);
    }
    Ok(Git {
        listen,
        state_dir,
        remotes,
        max_request_bytes,
        max_blob_bytes,
        fetch_timeout_secs,
    })
}

fn git_remote(
    rm: &mut Map<String, Value>,
    prefix: &str,
    secrets: &BTreeMap<String, Zeroizing<String>>,
) -> Result<GitRemote, BootstrapError> {
    check_keys(rm, &GIT_REMOTE_KEYS, &format!("{prefix}."))?;
    let p = |key: &str| format!("{prefix}.{key}");
    let name = take_string(rm, "name", &p("name"))?;
    if name.is_empty() {
        return Err(field(p("name"), "is empty"));
    }
    let url = take_string(rm, "url", &p("url"))?;
    if url.is_empty() {
        return Err(field(p("url"), "is empty"));
    }
    let secret = take_opt_string(rm, "secret", &p("secret"))?;
    let username = take_opt_string(rm, "username", &p("username"))?;
    let ssh_key = take_opt_string(rm, "ssh_key", &p("ssh_key"))?;
    let host_key = take_opt_string(rm, "host_key", &p("host_key"))?;
    for (key, named) in [("secret", &secret), ("ssh_key", &ssh_key)] {
        if named.as_ref().is_some_and(|s| !secrets.contains_key(s)) {
            return Err(field(p(key), "names a secret that is not in `secrets`"));
        }
    }
    let allow_private = take_strings(rm, "allow_private", &p("allow_private"))?.unwrap_or_default();
    if let Some(i) = allow_private.iter().position(|n| !is_network(n)) {
        return Err(field(
            format!("{prefix}.allow_private.{i}"),
            "is not a network like 10.1.0.0/16 or fd00::/8",
        ));
    }
    let policy = match rm.get_mut("policy") {
        None | Some(Value::Null) => GitPushPolicy::default(),
        Some(v) => {
            let path = p("policy");
            push_policy(object(v, &path, "{push, allow_delete, …}")?, &path)?
        }
    };
    Ok(GitRemote {
        name,
        url,
        secret,
        username,
        ssh_key,
        host_key,
        allow_private,
        policy,
    })
}

fn push_policy(pm: &mut Map<String, Value>, prefix: &str) -> Result<GitPushPolicy, BootstrapError> {
    check_keys(pm, &GIT_POLICY_KEYS, &format!("{prefix}."))?;
    let p = |key: &str| format!("{prefix}.{key}");
    let d = GitPushPolicy::default();
    Ok(GitPushPolicy {
        push: take_strings(pm, "push", &p("push"))?.unwrap_or(d.push),
        allow_delete: opt_bool(pm, "allow_delete", &p("allow_delete"))?.unwrap_or(d.allow_delete),
        allow_tags: opt_bool(pm, "allow_tags", &p("allow_tags"))?.unwrap_or(d.allow_tags),
        allow_force: opt_bool(pm, "allow_force", &p("allow_force"))?.unwrap_or(d.allow_force),
        force_namespaces: take_strings(pm, "force_namespaces", &p("force_namespaces"))?
            .unwrap_or(d.force_namespaces),
    })
}

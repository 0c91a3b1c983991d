//! Loading a bottle with its `extends` chain, and the merge rules.
//!
//! Merge rules (parent first, each child layered on top):
//! - scalars (`description`, `image`, `workspace`, `protect_git`, `runtime`, `git.author_*`): the child's value
//!   replaces the parent's when the child sets it;
//! - `[resources]` and `[proxy]`: merged key by key (child wins); `proxy.extra_roots` is the
//!   union (parent's first);
//! - `[[route]]` by id (`id`, else `host`), `[secrets]` by name, `[env]` by variable,
//!   `[[git.remote]]` and `[[model]]` by `name`: a child entry replaces the parent's entry of
//!   the same key as a whole; new entries are added after the parent's.
//!
//! A bottle may not extend itself; cycles, missing parents and chains deeper than
//! [`MAX_EXTENDS_DEPTH`] are refused at load.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bottle_proxy::policy::{RouteSpec, SettingsSpec};

use super::bottle::{
    builtin_bottle, is_valid_name, parse_layer, route_id, BottleLayer, GitRemote, ImageSpec,
    Located, ModelSpec, RuntimeMode, SecretDecl, WorkspaceMode, BUILTIN_BOTTLES,
};
use super::error::{Location, ManifestError};
use super::source::SourceFile;
use super::suggest::did_you_mean;

/// Longest `extends` chain accepted (a bottle plus this many ancestors).
pub const MAX_EXTENDS_DEPTH: usize = 16;

/// A bottle with its whole `extends` chain merged, before cross-checks.
#[derive(Debug)]
pub(crate) struct MergedBottle {
    pub name: String,
    /// The files of the chain, the bottle itself first, then its parent, and so on.
    pub chain: Vec<(String, Arc<SourceFile>)>,
    pub description: Option<String>,
    pub image: Option<ImageSpec>,
    pub workspace: Option<WorkspaceMode>,
    pub protect_git: Option<bool>,
    pub runtime: Option<RuntimeMode>,
    pub cpus: Option<f64>,
    pub memory: Option<(u64, String)>,
    pub pids: Option<u64>,
    pub routes: Vec<Located<RouteSpec>>,
    pub secrets: BTreeMap<String, Located<SecretDecl>>,
    pub env: BTreeMap<String, Located<String>>,
    pub author_name: Option<String>,
    pub author_email: Option<String>,
    pub remotes: Vec<Located<GitRemote>>,
    pub models: Vec<Located<ModelSpec>>,
    pub settings: SettingsSpec,
}

/// Names of the `*.<ext>` files in `dir` (sorted), empty when `dir` does not exist.
pub(crate) fn list_names(dir: &Path, ext: &str) -> Result<Vec<(String, PathBuf)>, ManifestError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ManifestError::Io {
                path: dir.to_path_buf(),
                source: e,
            })
        }
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| ManifestError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some(ext) {
            continue;
        }
        if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
            if !stem.starts_with('.') {
                out.push((stem.to_string(), path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every bottle name that can be used: files in `$BOTTLE_HOME/bottles` plus built-ins.
pub(crate) fn bottle_names(home: &Path) -> Vec<String> {
    let mut names: Vec<String> = list_names(&home.join("bottles"), "toml")
        .unwrap_or_default()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for b in BUILTIN_BOTTLES {
        if !names.iter().any(|n| n == b) {
            names.push(b.to_string());
        }
    }
    names
}

/// Reads a file into a [`SourceFile`] named relative to `base` in messages.
pub(crate) fn read_source(path: &Path, display: String) -> Result<Arc<SourceFile>, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|e| ManifestError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    Ok(Arc::new(SourceFile {
        path: path.to_path_buf(),
        display,
        text,
        line_base: 1,
    }))
}

/// The source of bottle `name`: `$BOTTLE_HOME/bottles/<name>.toml`, else a built-in, else `None`.
pub(crate) fn bottle_source(
    home: &Path,
    name: &str,
) -> Result<Option<Arc<SourceFile>>, ManifestError> {
    if !is_valid_name(name) {
        return Ok(None);
    }
    let path = home.join("bottles").join(format!("{name}.toml"));
    if path.is_file() {
        return read_source(&path, format!("bottles/{name}.toml")).map(Some);
    }
    Ok(builtin_bottle(name).map(|text| {
        Arc::new(SourceFile {
            path: PathBuf::from(format!("<built-in {name}>")),
            display: format!("<built-in bottle {name}>"),
            text: text.to_string(),
            line_base: 1,
        })
    }))
}

/// The error for a bottle that does not exist, referenced from `from` (an agent or a child).
pub(crate) fn missing_bottle(
    home: &Path,
    name: &str,
    from: Option<Location>,
    what: &str,
) -> ManifestError {
    let names = bottle_names(home);
    let suggestion = did_you_mean(name, names.iter().map(String::as_str));
    let searched = home.join("bottles").join(format!("{name}.toml"));
    match from {
        Some(loc) => ManifestError::Extends {
            loc,
            message: format!(
                "{what} `{name}` does not exist: no {} and no built-in bottle of that name (available: {})",
                searched.display(),
                names.join(", ")
            ),
            suggestion,
        },
        None => ManifestError::NotFound {
            what: "bottle",
            name: name.to_string(),
            searched: searched.display().to_string(),
            suggestion,
            note: Some(format!("available bottles: {}", names.join(", "))),
        },
    }
}

/// Loads bottle `name` and its ancestors: `[name, parent, grandparent, …]`.
pub(crate) fn load_chain(
    home: &Path,
    name: &str,
    from: Option<Location>,
) -> Result<Vec<BottleLayer>, ManifestError> {
    let Some(src) = bottle_source(home, name)? else {
        return Err(missing_bottle(home, name, from, "bottle"));
    };
    let mut layers = vec![parse_layer(name, src, home)?];
    loop {
        let last = layers.last().expect("at least one layer");
        let Some(ext) = &last.extends else { break };
        let parent = ext.value.clone();
        let loc = ext.loc();
        if parent == last.name {
            return Err(ManifestError::Extends {
                loc,
                message: format!(
                    "bottle `{parent}` extends itself; remove `extends` or name another bottle"
                ),
                suggestion: None,
            });
        }
        if let Some(pos) = layers.iter().position(|l| l.name == parent) {
            let mut cycle: Vec<&str> = layers[pos..].iter().map(|l| l.name.as_str()).collect();
            cycle.push(&parent);
            return Err(ManifestError::Extends {
                loc,
                message: format!(
                    "`extends` forms a cycle: {}; break it by removing one `extends`",
                    cycle.join(" -> ")
                ),
                suggestion: None,
            });
        }
        if layers.len() > MAX_EXTENDS_DEPTH {
            return Err(ManifestError::Extends {
                loc,
                message: format!("the `extends` chain is deeper than {MAX_EXTENDS_DEPTH} bottles"),
                suggestion: None,
            });
        }
        if !is_valid_name(&parent) {
            return Err(ManifestError::Invalid {
                loc,
                key: "extends".into(),
                message: format!(
                    "`{parent}` is not a bottle name (letters, digits, `.`, `_`, `-`)"
                ),
                suggestion: None,
            });
        }
        let Some(src) = bottle_source(home, &parent)? else {
            return Err(missing_bottle(home, &parent, Some(loc), "parent bottle"));
        };
        layers.push(parse_layer(&parent, src, home)?);
    }
    Ok(layers)
}

/// Replaces the entry with the same key or appends a new one.
fn upsert<T>(items: &mut Vec<Located<T>>, item: Located<T>, key: impl Fn(&T) -> String) {
    let k = key(&item.value);
    match items.iter().position(|i| key(&i.value) == k) {
        Some(pos) => items[pos] = item,
        None => items.push(item),
    }
}

/// Merges `[proxy]` settings key by key (child wins; arrays are unioned).
fn merge_settings(parent: &SettingsSpec, child: &SettingsSpec) -> SettingsSpec {
    let to_table = |s: &SettingsSpec| match toml::Value::try_from(s) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    };
    let mut merged = to_table(parent);
    for (k, v) in to_table(child) {
        match (merged.get_mut(&k), v) {
            (Some(toml::Value::Array(existing)), toml::Value::Array(new)) => {
                for item in new {
                    if !existing.contains(&item) {
                        existing.push(item);
                    }
                }
            }
            (_, v) => {
                merged.insert(k, v);
            }
        }
    }
    toml::Value::Table(merged)
        .try_into()
        .unwrap_or_else(|_| child.clone())
}

/// Merges a chain from [`load_chain`] into one bottle (see the module docs for the rules).
pub(crate) fn merge(layers: Vec<BottleLayer>) -> MergedBottle {
    let name = layers.first().map(|l| l.name.clone()).unwrap_or_default();
    let chain = layers
        .iter()
        .map(|l| (l.name.clone(), Arc::clone(&l.src)))
        .collect();
    let mut m = MergedBottle {
        name,
        chain,
        description: None,
        image: None,
        workspace: None,
        protect_git: None,
        runtime: None,
        cpus: None,
        memory: None,
        pids: None,
        routes: Vec::new(),
        secrets: BTreeMap::new(),
        env: BTreeMap::new(),
        author_name: None,
        author_email: None,
        remotes: Vec::new(),
        models: Vec::new(),
        settings: SettingsSpec::default(),
    };
    for layer in layers.into_iter().rev() {
        m.description = layer.description.or(m.description);
        m.image = layer.image.or(m.image);
        m.workspace = layer.workspace.or(m.workspace);
        m.runtime = layer.runtime.or(m.runtime);
        m.protect_git = layer.protect_git.or(m.protect_git);
        m.cpus = layer.cpus.or(m.cpus);
        m.memory = layer.memory.or(m.memory);
        m.pids = layer.pids.or(m.pids);
        m.author_name = layer.author_name.or(m.author_name);
        m.author_email = layer.author_email.or(m.author_email);
        for r in layer.routes {
            upsert(&mut m.routes, r, route_id);
        }
        for (k, s) in layer.secrets {
            m.secrets.insert(k, s);
        }
        for (k, v) in layer.env {
            m.env.insert(k, v);
        }
        for r in layer.remotes {
            upsert(&mut m.remotes, r, |r| r.name.clone());
        }
        for md in layer.models {
            upsert(&mut m.models, md, |md| md.name.clone());
        }
        if let Some(p) = layer.proxy {
            m.settings = merge_settings(&m.settings, &p);
        }
    }
    m
}

//! The CA bundle the agent trusts: the agent image's own roots plus the bottle CA.
//!
//! The image's bundle is read once per image id (from a created, never started container)
//! and cached under `~/.cache/bottle/roots/` (public data).
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::TryStreamExt;

/// Where Debian-family images keep their bundle (mounted over by the bottle bundle).
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn cache_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("bottle/roots"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/bottle/roots"))
}

/// The image's CA bundle (PEM text), or empty if the image has none.
pub async fn image_roots(docker: &Docker, image: &str) -> Result<String> {
    Ok(image_files(docker, image, &[SYSTEM_BUNDLE])
        .await?
        .remove(0)
        .unwrap_or_default())
}

/// Text files of an image (`None` where absent; a symlink or a binary file reads as empty,
/// which tells its presence), read from a created, never started container and cached per
/// image id. Only for public files (CA bundles, passwd, `/bin/sh`).
pub async fn image_files(
    docker: &Docker,
    image: &str,
    paths: &[&str],
) -> Result<Vec<Option<String>>> {
    let inspect = docker
        .inspect_image(image)
        .await
        .with_context(|| format!("image {image} is not present — run `bottle images build`"))?;
    let image_id = inspect.id.unwrap_or_default().replace("sha256:", "");
    let cache_of =
        |p: &str| cache_dir().map(|d| d.join(format!("{image_id}{}", p.replace('/', "_"))));
    let mut out: Vec<Option<Option<String>>> = paths
        .iter()
        .map(|p| {
            let c = cache_of(p)?;
            if c.with_extension("absent").exists() {
                return Some(None);
            }
            std::fs::read_to_string(c).ok().map(Some)
        })
        .collect();
    if out.iter().all(Option::is_some) {
        return Ok(out.into_iter().map(Option::unwrap_or_default).collect());
    }
    let name = format!("bottle-files-{}", super::labels::new_id()?);
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            ContainerCreateBody {
                image: Some(image.to_string()),
                cmd: Some(vec!["/nonexistent".into()]),
                network_disabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("creating a scratch container of {image} to read its files"))?;
    for (i, p) in paths.iter().enumerate() {
        if out[i].is_some() {
            continue;
        }
        let tar_bytes: Result<Vec<u8>> = docker
            .download_from_container(
                &name,
                Some(
                    DownloadFromContainerOptionsBuilder::default()
                        .path(p)
                        .build(),
                ),
            )
            .map_ok(|b| b.to_vec())
            .try_concat()
            .await
            .map_err(anyhow::Error::from);
        let text = match tar_bytes {
            Ok(t) => Some(first_file_in_tar(&t)?),
            Err(_) => None,
        };
        if let Some(c) = cache_of(p) {
            if let Some(dir) = c.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = match &text {
                Some(t) => std::fs::write(&c, t),
                None => std::fs::write(c.with_extension("absent"), ""),
            };
        }
        out[i] = Some(text);
    }
    let _ = docker
        .remove_container(
            &name,
            Some(
                RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        )
        .await;
    Ok(out.into_iter().map(Option::unwrap_or_default).collect())
}

/// `/etc/passwd` and `/etc/group` for the agent: the image's entries plus user `agent`
/// with the given uid/gid and home (replacing any entry with that uid or name).
pub fn passwd_group(passwd: &str, group: &str, uid: u32, gid: u32, home: &str) -> (String, String) {
    let mut p: String = passwd
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split(':').collect();
            f.len() < 3 || (f[0] != "agent" && f[2] != uid.to_string())
        })
        .map(|l| format!("{l}\n"))
        .collect();
    p.push_str(&format!(
        "agent:x:{uid}:{gid}:bottle agent:{home}:/bin/bash\n"
    ));
    let has_gid = group
        .lines()
        .any(|l| l.split(':').nth(2) == Some(gid.to_string().as_str()));
    let mut g: String = group.lines().map(|l| format!("{l}\n")).collect();
    if !has_gid {
        g.push_str(&format!("agent:x:{gid}:\n"));
    }
    (p, g)
}

/// The text of the first regular file (following one symlink level is done by the engine) in a tar.
fn first_file_in_tar(data: &[u8]) -> Result<String> {
    let mut ar = tar::Archive::new(data);
    for entry in ar.entries().context("reading the CA bundle archive")? {
        let mut e = entry.context("reading the CA bundle archive")?;
        if e.header().entry_type().is_file() {
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes)
                .context("reading a file of the image")?;
            // A binary file (e.g. `/bin/sh`, asked for its presence only) reads as empty.
            return Ok(String::from_utf8(bytes).unwrap_or_default());
        }
    }
    Ok(String::new())
}

/// The bundle mounted over the system path: image roots, then the bottle CA.
pub fn bundle(image_roots: &str, bottle_ca_pem: &str) -> String {
    let mut s = image_roots.trim_end().to_string();
    if !s.is_empty() {
        s.push('\n');
    }
    s.push_str(bottle_ca_pem.trim_end());
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwd_adds_agent_and_drops_clashes() {
        let (p, g) = super::passwd_group(
            "root:x:0:0::/root:/bin/bash\nold:x:1000:1000::/h:/bin/sh\n",
            "root:x:0:\n",
            1000,
            1000,
            "/home/agent",
        );
        assert_eq!(
            p,
            "root:x:0:0::/root:/bin/bash\nagent:x:1000:1000:bottle agent:/home/agent:/bin/bash\n"
        );
        assert_eq!(g, "root:x:0:\nagent:x:1000:\n");
        let (_, g) = super::passwd_group("", "staff:x:1000:\n", 1000, 1000, "/h");
        assert_eq!(g, "staff:x:1000:\n");
    }

    #[test]
    fn bundle_appends_ca() {
        assert_eq!(super::bundle("A\n\n", "B"), "A\nB\n");
        assert_eq!(super::bundle("", "B\n"), "B\n");
    }
}

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
    let inspect = docker
        .inspect_image(image)
        .await
        .with_context(|| format!("image {image} is not present — run `bottle images build`"))?;
    let image_id = inspect.id.unwrap_or_default().replace("sha256:", "");
    let cached = cache_dir().map(|d| d.join(format!("{image_id}.pem")));
    if let Some(p) = &cached {
        if let Ok(s) = std::fs::read_to_string(p) {
            return Ok(s);
        }
    }
    let name = format!("bottle-roots-{}", super::labels::new_id()?);
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
        .with_context(|| {
            format!("creating a scratch container of {image} to read its CA bundle")
        })?;
    let tar_bytes: Result<Vec<u8>> = docker
        .download_from_container(
            &name,
            Some(
                DownloadFromContainerOptionsBuilder::default()
                    .path(SYSTEM_BUNDLE)
                    .build(),
            ),
        )
        .map_ok(|b| b.to_vec())
        .try_concat()
        .await
        .map_err(anyhow::Error::from);
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
    let pem = match tar_bytes {
        Ok(t) => first_file_in_tar(&t)?,
        Err(_) => String::new(), // the image has no bundle: trust the bottle CA alone
    };
    if let Some(p) = &cached {
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(p, &pem);
    }
    Ok(pem)
}

/// The text of the first regular file (following one symlink level is done by the engine) in a tar.
fn first_file_in_tar(data: &[u8]) -> Result<String> {
    let mut ar = tar::Archive::new(data);
    for entry in ar.entries().context("reading the CA bundle archive")? {
        let mut e = entry.context("reading the CA bundle archive")?;
        if e.header().entry_type().is_file() {
            let mut s = String::new();
            e.read_to_string(&mut s)
                .context("the image's CA bundle is not UTF-8 PEM")?;
            return Ok(s);
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
    fn bundle_appends_ca() {
        assert_eq!(super::bundle("A\n\n", "B"), "A\nB\n");
        assert_eq!(super::bundle("", "B\n"), "B\n");
    }
}

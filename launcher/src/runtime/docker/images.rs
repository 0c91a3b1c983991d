//! What the launch reads from the agent image: its config (entrypoint, default command) and
//! public text files (CA bundle, passwd, group, `/bin/sh`'s presence).
//!
//! The files are read once per image id (from a created, never started container) and cached
//! under `~/.cache/bottle/roots/` (public data).
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

use crate::runtime::roots::SYSTEM_BUNDLE;

/// The image's own entrypoint and default command (empty when it has none).
pub async fn entrypoint_and_cmd(
    docker: &Docker,
    image: &str,
) -> Result<(Vec<String>, Vec<String>)> {
    let config = docker
        .inspect_image(image)
        .await
        .with_context(|| format!("inspecting the agent image {image}"))?
        .config
        .unwrap_or_default();
    Ok((
        config.entrypoint.unwrap_or_default(),
        config.cmd.unwrap_or_default(),
    ))
}

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
    let name = format!("bottle-files-{}", crate::runtime::labels::new_id()?);
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

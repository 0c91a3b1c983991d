//! Images a manifest names itself: `image = "<tag>"` (used when the engine has it, pulled
//! otherwise) and `image = { dockerfile, context }` (built, cached by a content hash of the
//! Dockerfile and every file of the context).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt as _;

use super::build::{build_image_file, file_context, ContextSource};
use super::{hash, ImageKind, ImageRef};
use crate::progress::Ui;

/// Makes sure the image `tag` exists, pulling it when the engine does not have it.
pub async fn ensure_tag(docker: &Docker, tag: &str, quiet: bool) -> anyhow::Result<String> {
    match docker.inspect_image(tag).await {
        Ok(_) => return Ok(tag.to_string()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => return Err(e).with_context(|| format!("inspecting image {tag}")),
    }
    let ui = Ui::new("bottle images", quiet);
    let step = ui.spinner(&format!("pulling {tag}"));
    let opts = CreateImageOptionsBuilder::default().from_image(tag).build();
    let mut stream = docker.create_image(Some(opts), None, None);
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| {
            anyhow::anyhow!(
                "image `{tag}` is not in the local engine and pulling it failed: {e}. Build it \
                 (`docker build -t {tag} …`), load it (`docker load`), or change `image` in the \
                 bottle manifest"
            )
        })?;
        if let Some(s) = info.status {
            step.message(&s);
        }
    }
    step.done(tag);
    Ok(tag.to_string())
}

/// Every file of the build context `dir` (hidden entries and `target/` left out), sorted.
fn context_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    hash::tree_files(dir, dir, &mut files)?;
    files.sort();
    Ok(files)
}

/// The tag of a manifest's Dockerfile image: `bottle/custom-<bottle>:<hash12>`, where the
/// hash covers the Dockerfile and every context file (path, mode and bytes).
pub fn dockerfile_ref(bottle: &str, dockerfile: &Path, context: &Path) -> anyhow::Result<ImageRef> {
    let files = context_files(context)?;
    let df = std::fs::read(dockerfile)
        .with_context(|| format!("reading the Dockerfile {}", dockerfile.display()))?;
    let mut h = hash::Hasher::new("custom");
    h.field(&df);
    for f in &files {
        let p = context.join(f);
        let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        h.field(f.to_string_lossy().as_bytes());
        h.field(&file_mode(&p).to_le_bytes());
        h.field(&bytes);
    }
    let hash = h.finish();
    let name: String = bottle
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    Ok(ImageRef {
        kind: ImageKind::Custom,
        tag: format!("bottle/custom-{name}:{}", &hash[..12]),
        hash,
    })
}

fn file_mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0o644)
}

/// Builds (or reuses) the Dockerfile image of a manifest and returns its tag.
pub async fn ensure_dockerfile(
    docker: &Docker,
    bottle: &str,
    dockerfile: &Path,
    context: &Path,
    quiet: bool,
) -> anyhow::Result<String> {
    let r = dockerfile_ref(bottle, dockerfile, context)?;
    let ui = Ui::new("bottle images", quiet);
    if super::image_exists(docker, &r).await? {
        return Ok(r.tag);
    }
    let work = std::env::temp_dir().join(format!(
        "bottle-custom-{}-{}",
        &r.hash[..12],
        std::process::id()
    ));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let result = async {
        let df = std::fs::read(dockerfile)
            .with_context(|| format!("reading the Dockerfile {}", dockerfile.display()))?;
        let files = context_files(context)?;
        let paths: Vec<(String, PathBuf, u32)> = files
            .iter()
            .map(|f| {
                let p = context.join(f);
                let m = file_mode(&p);
                (f.to_string_lossy().into_owned(), p, m)
            })
            .collect();
        // The Dockerfile goes in under a name no context file has.
        let df_name = ".bottle-Dockerfile";
        let mut entries = vec![ContextSource::Bytes(df_name, &df, 0o644)];
        entries.extend(paths.iter().map(|(n, p, m)| ContextSource::File(n, p, *m)));
        let ctx = file_context(&work.join("context.tar"), &entries)?;
        let step = ui.spinner(&format!("building {} from {}", r.tag, dockerfile.display()));
        build_image_file(docker, &r, &ctx, df_name, &step).await?;
        step.done(&r.tag);
        anyhow::Ok(())
    }
    .await
    .with_context(|| format!("building the bottle's image from {}", dockerfile.display()));
    let _ = std::fs::remove_dir_all(&work);
    result.map(|()| r.tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerfile_tags_follow_the_context() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("Dockerfile"), "FROM scratch\nCOPY a /a\n").unwrap();
        std::fs::write(d.path().join("a"), "1").unwrap();
        let df = d.path().join("Dockerfile");
        let r1 = dockerfile_ref("My Bottle", &df, d.path()).unwrap();
        assert!(r1.tag.starts_with("bottle/custom-my-bottle:"), "{}", r1.tag);
        assert_eq!(r1, dockerfile_ref("My Bottle", &df, d.path()).unwrap());
        std::fs::write(d.path().join("a"), "2").unwrap();
        let r2 = dockerfile_ref("My Bottle", &df, d.path()).unwrap();
        assert_ne!(r1.tag, r2.tag, "a context file counts");
        std::fs::create_dir(d.path().join("target")).unwrap();
        std::fs::write(d.path().join("target/x"), "junk").unwrap();
        assert_eq!(r2, dockerfile_ref("My Bottle", &df, d.path()).unwrap());
        std::fs::write(&df, "FROM scratch\n").unwrap();
        assert_ne!(
            r2.tag,
            dockerfile_ref("My Bottle", &df, d.path()).unwrap().tag
        );
    }
}

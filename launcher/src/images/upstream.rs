//! The e2e tests' fake upstream: `images/test-upstream/server.py` over the agent base image
//! (also the fake model server: `server.py --model-server`, `fake_model.py`).

use bollard::Docker;

use super::build::{build_image, context_tar, ContextFile};
use super::recipe;
use super::ImageRef;
use crate::progress::Ui;

/// Builds the test upstream image `r` on top of `base` (which must exist).
pub async fn build(docker: &Docker, r: &ImageRef, base: &ImageRef, ui: &Ui) -> anyhow::Result<()> {
    let dockerfile = recipe::UPSTREAM_DOCKERFILE.replace("{{BASE}}", &base.tag);
    let ctx = context_tar(&[
        ContextFile {
            path: "Dockerfile",
            data: dockerfile.as_bytes(),
            mode: 0o644,
        },
        ContextFile {
            path: "server.py",
            data: recipe::UPSTREAM_SERVER.as_bytes(),
            mode: 0o755,
        },
        ContextFile {
            path: "fake_llm.py",
            data: recipe::UPSTREAM_FAKE_LLM.as_bytes(),
            mode: 0o644,
        },
        ContextFile {
            path: "fake_model.py",
            data: recipe::UPSTREAM_FAKE_MODEL.as_bytes(),
            mode: 0o644,
        },
    ])?;
    let step = ui.spinner("test-upstream image");
    build_image(docker, r, ctx, &step).await?;
    step.done(&r.tag);
    Ok(())
}

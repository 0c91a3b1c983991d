#!/usr/bin/env bash
# Builds a release tarball: dist/bottle-<version>-x86_64-linux.tar.gz holding `bottle`, the static
# `bottle-sidecar` beside it (found there at run time, so no Rust checkout is needed), the example
# manifests and the README. Install: untar anywhere and put the directory on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
name="bottle-${version}-x86_64-linux"
cargo build --release --locked -p bottle
# The same flags and target directory the launcher uses for the sidecar image, so both share
# one build.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -p bottle-sidecar \
    --target x86_64-unknown-linux-gnu --target-dir target/static
out="dist/$name"
rm -rf "$out"
mkdir -p "$out"
install -m 0755 target/release/bottle "$out/bottle"
install -m 0755 target/static/x86_64-unknown-linux-gnu/release/bottle-sidecar "$out/bottle-sidecar"
cp -r manifests README.md "$out/"
tar -C dist -czf "dist/$name.tar.gz" "$name"
echo "dist/$name.tar.gz"

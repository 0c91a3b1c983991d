#!/usr/bin/env bash
# Sets up bottle on this machine: Debian packages, a release build, and the offline images.
# Usage: scripts/setup.sh        (then: target/release/bottle start shell)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh run
cargo build --release -p bottle -p bottle-sidecar
./target/release/bottle images build

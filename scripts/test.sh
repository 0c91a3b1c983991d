#!/usr/bin/env bash
# The test command from the README: installs test dependencies, then runs every test,
# including the end-to-end tests against the local Docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh test
cargo test --workspace --release --no-fail-fast -- --test-threads=2

#!/usr/bin/env bash
# Installs the Debian packages bottle needs. Usage: scripts/deps.sh [run|test|bench]
set -euo pipefail
what="${1:-run}"
pkgs=(curl ca-certificates mmdebstrap)
case "$what" in
  test) pkgs+=(iproute2 tcpdump git tmux) ;;  # e2e: `ip` lists host addresses, tcpdump watches DNS leave the host; git-gate tests run real git clients and `git http-backend`; tmux reads the agent TUIs
  bench) pkgs+=(nginx squid-openssl wrk hyperfine) ;;
esac
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The claude/codex images are built from pinned PyPI wheels with `python3 -m pip download`.
if ! python3 -m pip --version >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-pip
fi

#!/usr/bin/env bash
# Soak: publish and play on one node for HOURS and report RSS, threads, fds, CPU, playlist
# anomalies and A/V drift over time (scripts/soak.py says what runs and what is checked).
# Usage: scripts/soak.sh HOURS [OUT_DIR]     (default OUT_DIR: target/soak-<date>)
# Needs what scripts/test.sh installs (ffmpeg, Chromium, the Node modules in tests/browser).
# As root it runs in a network namespace with only loopback (WebRTC gathers candidates on every
# interface otherwise); elsewhere on the host's loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
hours=${1:?usage: scripts/soak.sh HOURS [OUT_DIR]}
out=${2:-target/soak-$(date +%Y%m%d-%H%M%S)}
. "$HOME/.cargo/env" 2>/dev/null || true
cargo build --release --locked -q --bin livegate --example load
[ -d tests/browser/node_modules ] || (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
mkdir -p "$out"
if [ "$(id -u)" = 0 ] && [ -z "${SOAK_IN_NETNS:-}" ]; then
  exec env SOAK_IN_NETNS=1 unshare --net -- sh -c 'ip link set lo up && exec python3 scripts/soak.py "$@"' soak "$hours" "$out"
fi
exec python3 scripts/soak.py "$hours" "$out"

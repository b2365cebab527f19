#!/usr/bin/env bash
# Installs every system package livegate needs on Debian 12 (run as root). Idempotent: packages
# already installed are skipped, and apt-get runs only when something is missing.
#   scripts/setup.sh run    build and run the server
#   scripts/setup.sh test   also everything the test suite needs (default)
set -euo pipefail
profile=${1:-test}

run_pkgs=(
  build-essential pkg-config clang libclang-dev ca-certificates curl git
  # FFmpeg 5.1 libraries for the in-process transcoder (ffmpeg-next), and the CLI tools
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
  libavfilter-dev libavdevice-dev ffmpeg
)
# Test peers: Chromium (hls.js, WebRTC publishes), nginx-rtmp (relay sink), stunnel4 and openssl
# (RTMPS); util-linux's unshare and iproute2's ip run the WebRTC tests in a loopback-only network
# namespace; redis-server for the cluster tests (each starts its own on a loopback port).
test_pkgs=(chromium chromium-driver jq procps python3 nginx libnginx-mod-rtmp stunnel4 openssl
  util-linux iproute2 redis-server)
# Debian's nodejs/npm only when no Node.js is installed (another Node's npm conflicts with them).
command -v node >/dev/null 2>&1 || test_pkgs+=(nodejs npm)

pkgs=("${run_pkgs[@]}")
[ "$profile" = test ] && pkgs+=("${test_pkgs[@]}")

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: installing system packages needs root (run with sudo)" >&2
  exit 1
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Rust: livegate needs 1.94 or newer (aws-sdk-s3's MSRV). Debian 12's own rustc is too old.
need_minor=94
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup.sh: installing Rust with rustup"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal \
    --component clippy,rustfmt
  export PATH="$HOME/.cargo/bin:$PATH"
fi
minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
if [ "${minor:-0}" -lt "$need_minor" ]; then
  if command -v rustup >/dev/null 2>&1; then
    rustup update stable
  else
    echo "setup.sh: rustc 1.$minor is too old; livegate needs 1.$need_minor+ (install rustup)" >&2
    exit 1
  fi
fi

# Fuzzing (scripts/fuzz.sh; scripts/test.sh runs it briefly): cargo-fuzz on the nightly
# toolchain, next to the stable one the build uses.
if [ "$profile" = test ]; then
  if ! rustup toolchain list | grep -q '^nightly'; then
    echo "setup.sh: installing the nightly toolchain for cargo-fuzz"
    rustup toolchain install nightly --profile minimal
  fi
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "setup.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
  fi
fi

# The tests' S3-compatible store: Garage, a single binary built from crates.io (the first build
# takes ~12 CPU-minutes; later runs find it installed). Reduced features: no LMDB, bundled SQLite.
garage_version=2.5.0
if [ "$profile" = test ]; then
  if ! "$HOME/.cargo/bin/garage" --version 2>/dev/null | grep -q "$garage_version"; then
    echo "setup.sh: building Garage $garage_version for the recording tests"
    cargo install garage --version "$garage_version" --locked \
      --no-default-features --features bundled-libs,sqlite
  fi
fi

echo "setup.sh: system ready ($profile): $(rustc --version), $(ffmpeg -version | head -1 | cut -d' ' -f1-3)"

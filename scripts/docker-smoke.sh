#!/usr/bin/env bash
# Builds the Docker image from the Dockerfile with podman and checks it end to end: /healthz and
# the image's own HEALTHCHECK, a publish with ffmpeg into the container played back with
# ffprobe, and /data (keys, recordings) surviving a container restart. Prints the image size,
# the build time and the start time.
#
# Usage (root, Debian 12): scripts/docker-smoke.sh [--runtime-only]
#   --runtime-only  builds the runtime stage around the host's release binary (seconds, not
#                   minutes): everything but the build stage.
#
# No registry needs to be reachable: the base images (debian:bookworm-slim, and a rust:1-bookworm
# stand-in with the host's Rust toolchain) are made locally with debootstrap from the host's apt
# mirror, once, and kept in podman's store. Podman's settings come from a private
# containers.conf (CONTAINERS_CONF); nothing in /etc is changed.
set -euo pipefail
cd "$(dirname "$0")/.."
runtime_only=false
[ "${1:-}" = "--runtime-only" ] && runtime_only=true
[ "$(id -u)" = 0 ] || { echo "docker-smoke.sh needs root (podman, debootstrap)" >&2; exit 1; }

need=()
for pkg in podman runc debootstrap ffmpeg curl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

state=/var/tmp/livegate-docker-smoke
mkdir -p "$state"
# crun cannot raise RLIMIT_NOFILE in this sandbox and refuses hybrid cgroups; runc can. livegate
# checks its connection caps against the open-file limit at start (12024 with the defaults).
cat > "$state/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF="$state/containers.conf"

# The host's apt mirror and the extra CAs it trusts (HTTPS leaving some machines is intercepted;
# cargo inside the build must trust what the host trusts).
mirror=$(grep -hoE '^(URIs:|deb) *https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources \
  /etc/apt/sources.list 2>/dev/null | grep -oE 'https?://[^ ]+' | head -1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
security=$(grep -hE '^(URIs:|deb) ' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list \
  2>/dev/null | grep -oE 'https?://[^ ]+/debian-security/?' | head -1 || true)
security=${security:-http://deb.debian.org/debian-security}

if ! podman image exists docker.io/library/debian:bookworm-slim; then
  echo "== making debian:bookworm-slim with debootstrap from $mirror"
  rootfs="$state/rootfs"
  rm -rf "$rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$state/debootstrap.log"
  cat > "$rootfs/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
EOF
  mkdir -p "$rootfs/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import - localhost/debian:bookworm-slim >/dev/null
  podman tag localhost/debian:bookworm-slim docker.io/library/debian:bookworm-slim
  rm -rf "$rootfs"
fi

if ! $runtime_only && ! podman image exists docker.io/library/rust:1-bookworm; then
  echo "== making a rust:1-bookworm stand-in with the host's toolchain"
  . "$HOME/.cargo/env" 2>/dev/null || true
  ctx="$state/rust-image"
  rm -rf "$ctx" && mkdir -p "$ctx"
  cp -a "$(rustc --print sysroot)" "$ctx/toolchain"
  rm -rf "$ctx/toolchain/share/doc"
  cat > "$ctx/Containerfile" <<'EOF'
FROM localhost/debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      ca-certificates curl git gcc g++ make libc6-dev pkg-config libssl-dev \
    && update-ca-certificates && rm -rf /var/lib/apt/lists/*
COPY toolchain /usr/local/rust
ENV PATH=/usr/local/rust/bin:$PATH CARGO_HOME=/usr/local/cargo
EOF
  podman build --pull=never -q -t docker.io/library/rust:1-bookworm "$ctx" >/dev/null
  rm -rf "$ctx"
fi

tag=localhost/livegate:smoke
started=$(date +%s%N)
if $runtime_only; then
  echo "== building the runtime stage around target/release/livegate"
  cargo build --release --locked -q --bin livegate
  ctx="$state/runtime"
  rm -rf "$ctx" && mkdir -p "$ctx/target/release" "$ctx/config"
  cp target/release/livegate "$ctx/target/release/"
  cp config/livegate.toml "$ctx/config/"
  # The Dockerfile's runtime stage, fed by the host's binary instead of the build stage.
  sed -n '/^FROM debian:bookworm-slim/,$p' Dockerfile \
    | sed 's#COPY --from=build /src/target/release/livegate#COPY target/release/livegate#' \
    > "$ctx/Containerfile"
  podman build --pull=never --format docker -q -t "$tag" -f "$ctx/Containerfile" "$ctx" >/dev/null
else
  echo "== podman build (the Dockerfile as is)"
  podman build --pull=never --format docker -t "$tag" . >"$state/build.log" 2>&1 \
    || { tail -30 "$state/build.log"; exit 1; }
fi
build_secs=$(( ($(date +%s%N) - started) / 1000000000 ))
size=$(podman image inspect --format '{{.Size}}' "$tag")
healthcheck=$(podman image inspect --format '{{json .Config.Healthcheck}}' "$tag")
echo "image $tag: $((size / 1024 / 1024)) MiB, built in ${build_secs} s; HEALTHCHECK $healthcheck"
[ "$healthcheck" != "null" ] || { echo "FAIL: the image has no HEALTHCHECK" >&2; exit 1; }

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
http=$(free_port); rtmp=$(free_port)
volume=livegate-smoke-$$
admin=smoke-admin-token
name=livegate-smoke-$$
cleanup() { podman rm -f "$name" >/dev/null 2>&1 || true; podman volume rm -f "$volume" >/dev/null 2>&1 || true; }
trap cleanup EXIT
run() {
  podman run -d --name "$name" --network host -v "$volume:/data" \
    -e LIVEGATE_HTTP_LISTEN="127.0.0.1:$http" -e LIVEGATE_RTMP_LISTEN="127.0.0.1:$rtmp" \
    -e LIVEGATE_WHIP_ENABLED=false -e LIVEGATE_HTTP_ADMIN_TOKEN="$admin" "$tag" >/dev/null
}
# Seconds (3 decimals) since a `date +%s%N` reading.
ms_since() { local ms=$(( ($(date +%s%N) - $1) / 1000000 )); printf '%d.%03d' $((ms / 1000)) $((ms % 1000)); }
wait_healthy() {
  local t0=$1
  for _ in $(seq 300); do
    if curl -fs "http://127.0.0.1:$http/healthz" >/dev/null; then
      ms_since "$t0"
      return 0
    fi
    sleep 0.05
  done
  podman logs "$name" | tail -20 >&2
  echo "FAIL: /healthz never answered" >&2
  exit 1
}

t0=$(date +%s%N)
run
start_secs=$(wait_healthy "$t0")
echo "container answered /healthz ${start_secs} s after podman run"
podman healthcheck run "$name" >/dev/null && echo "the image's HEALTHCHECK passes"

key=$(podman exec "$name" livegate keys add smoke | tail -1)
clip="$state/clip.flv"
ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=640x360:rate=30 -f lavfi \
  -i sine=frequency=440:sample_rate=48000 -t 8 -c:v libx264 -preset veryfast -pix_fmt yuv420p \
  -g 30 -c:a aac -f flv "$clip"
ffmpeg -hide_banner -loglevel error -nostdin -re -i "$clip" -c copy -f flv \
  "rtmp://127.0.0.1:$rtmp/live/$key" &
publisher=$!
for _ in $(seq 200); do
  curl -fs "http://127.0.0.1:$http/live/smoke/index.m3u8" | grep -q m3u8 && break
  sleep 0.1
done
sleep 3
streams=$(ffprobe -v error -show_entries stream=codec_name,width,height -of csv=p=0 \
  "http://127.0.0.1:$http/live/smoke/index.m3u8" | sort -u | tr '\n' ' ')
echo "ffprobe of the live HLS: $streams"
case "$streams" in *h264*aac*|*aac*h264*) ;; *) echo "FAIL: expected H.264 and AAC" >&2; exit 1 ;; esac
wait "$publisher"
# The recording is finished once the stream has ended.
for _ in $(seq 100); do
  curl -fs -H "authorization: Bearer $admin" "http://127.0.0.1:$http/api/v1/recordings" \
    | grep -q '"state":"finished"' && break
  sleep 0.2
done

t_stop=$(date +%s%N)
podman stop -t 10 "$name" >/dev/null
stop_secs=$(ms_since "$t_stop")
exit_code=$(podman inspect --format '{{.State.ExitCode}}' "$name")
echo "podman stop took ${stop_secs} s, exit code $exit_code"
[ "$exit_code" = 0 ] || { echo "FAIL: livegate did not exit 0 on SIGTERM" >&2; exit 1; }
t0=$(date +%s%N)
podman start "$name" >/dev/null
restart_secs=$(wait_healthy "$t0")
keys=$(podman exec "$name" livegate keys list)
recordings=$(curl -fs -H "authorization: Bearer $admin" "http://127.0.0.1:$http/api/v1/recordings")
echo "$keys" | grep -q smoke || { echo "FAIL: the key did not survive the restart" >&2; exit 1; }
echo "$recordings" | grep -q '"state":"finished"' \
  || { echo "FAIL: the recording did not survive the restart: $recordings" >&2; exit 1; }
vod=$(echo "$recordings" | python3 -c 'import json,sys;r=json.load(sys.stdin);r=r if isinstance(r,list) else r["recordings"];print(r[0]["id"])')
vod_probe=$(ffprobe -v error -headers "Authorization: Bearer $admin" -show_entries format=duration \
  -of csv=p=0 "http://127.0.0.1:$http/vod/$vod/index.m3u8")
echo "after a restart (healthy in ${restart_secs} s): key kept, recording $vod plays (${vod_probe} s)"
echo "PASS: image $((size / 1024 / 1024)) MiB, build ${build_secs} s, start ${start_secs} s, stop ${stop_secs} s"

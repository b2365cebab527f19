#!/usr/bin/env bash
# scripts/bench.sh codecs [SECONDS]: server CPU per media-second through the ladder for the same
# 720p30 picture as H.264, HEVC and AV1 (see scripts/bench.sh). Expects the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
bin=$PWD/target/release/livegate
pace=$PWD/target/release/examples/pace_publish
work=$(mktemp -d /tmp/livegate-codecs.XXXXXX)
server_pid=
trap 'kill $server_pid 2>/dev/null || true; rm -rf "$work"' EXIT

src=(-f lavfi -i "testsrc2=size=1280x720:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=48000"
     -t "$secs" -pix_fmt yuv420p)
echo "encoding ${secs} s of 720p30 as H.264, HEVC and AV1…"
ffmpeg -hide_banner -loglevel error -y "${src[@]}" -c:v libx264 -preset veryfast \
  -x264-params "keyint=60:min-keyint=60:scenecut=0" -b:v 3000k -c:a aac -b:a 128k -f flv "$work/h264.flv"
ffmpeg -hide_banner -loglevel error -y "${src[@]}" -c:v libx265 -preset veryfast \
  -x265-params "log-level=error:keyint=60:min-keyint=60:scenecut=0" -b:v 2000k -tag:v hvc1 \
  -c:a aac -b:a 128k "$work/hevc.mp4"
ffmpeg -hide_banner -loglevel error -y "${src[@]}" -c:v libsvtav1 -preset 10 -g 60 \
  -svtav1-params scd=0 -b:v 1500k -c:a aac -b:a 128k "$work/av1.mp4" 2>/dev/null

rtmp_port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
http_port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
export LIVEGATE_DATA_DIR=$work/data LIVEGATE_RTMP_LISTEN=127.0.0.1:$rtmp_port \
       LIVEGATE_HTTP_LISTEN=127.0.0.1:$http_port LIVEGATE_LOG=warn LIVEGATE_RECORD_ENABLED=false
key=$("$bin" keys add bench | tail -1)
"$bin" serve 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$http_port/healthz" >/dev/null && break; sleep 0.1; done

cpu_of() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
declare -A cost
for codec in h264 hevc av1; do
  file=$work/$codec.flv; [ -f "$file" ] || file=$work/$codec.mp4
  cpu0=$(cpu_of)
  "$pace" "$file" "rtmp://127.0.0.1:$rtmp_port/live/$key" "http://127.0.0.1:$http_port/live/bench" \
    1000 720p > /dev/null
  sleep 2
  cpu1=$(cpu_of)
  cost[$codec]=$(python3 -c "print(($cpu1 - $cpu0) / $(getconf CLK_TCK) / $secs)")
  dropped=$(curl -fs "http://127.0.0.1:$http_port/metrics" | awk '/^livegate_transcode_dropped_frames_total/ {print $2}')
  printf '%-5s source → ladder: %.3f CPU-s per media-s (frames dropped so far: %s)\n' \
    "$codec" "${cost[$codec]}" "${dropped:-0}"
done
python3 - "${cost[h264]}" "${cost[hevc]}" "${cost[av1]}" <<'PY'
import sys
h264, hevc, av1 = map(float, sys.argv[1:4])
print(f"HEVC / H.264: {hevc / h264:.3f}×   AV1 / H.264: {av1 / h264:.3f}×  (same ladder, same run)")
PY

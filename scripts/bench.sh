#!/usr/bin/env bash
# Benchmarks (measurements, not tests).
# Usage: scripts/bench.sh ingest|ladder|codecs|whip|cluster|latency|blocking|site|load|https [SECONDS]
#
# ladder: livegate's in-process ladder against the reference ffmpeg-CLI ladder
#   (ffmpeg/reference-ladder.sh) on generated 720p30 and 1080p30 inputs: CPU-s per media-s and
#   the ratio, peak RSS, per-rung PSNR against the source, the x264 floor, the segment
#   availability delay through the ladder, and how many live 720p30 ladders keep real time at
#   once, with every rung encoded and with the source as the 720p rung (transcode.source_rung).
#   "scripts/bench.sh ladder SECONDS concurrency" runs only the last part. See
#   scripts/bench_ladder.py.
#
# ingest: one 720p30 H.264/AAC stream (x264 B-frames, 2 s GOP) published for SECONDS (default 60)
#   in real time from a pre-encoded FLV by examples/pace_publish.rs (which records when each tag
#   is written to the socket), through a release build of livegate in passthrough.
#   Reports: time from publish start to the first master playlist; segment availability delay (the segment's last frame sent → the segment listed in the playlist),
#   median and p95 (pass 1, playlist polled every 2 ms); the server's CPU-seconds and peak RSS
#   (CPU in pass 2, polled every second like one player, so the polling does not dominate;
#   peak RSS after pass 1).
# codecs: the same 720p30 picture published as H.264 (legacy FLV), HEVC and AV1 (Enhanced RTMP,
#   from MP4s encoded by libx265 / libsvtav1, sent by examples/pace_publish.rs) through the
#   default ladder for SECONDS (default 30): the server's CPU-seconds per media-second for each,
#   and HEVC's and AV1's as a ratio of H.264's measured in the same run (what decoding them costs
#   on top of the ladder).
# whip: 640x480 VP8 and H.264 from headless Chromium over WHIP, and H.264 over RTMP, each through
#   the ladder for SECONDS (default 30), in a loopback-only network namespace: time to the first
#   master playlist, segment availability delay, server CPU-seconds per media-second (and as a
#   ratio of RTMP's), Chromium's WebRTC stats. See scripts/bench_whip.py.
# cluster: two nodes + Redis + the shipped nginx edge; requests/s and latency for a segment and
#   a playlist served by the owner, through the other node, and through nginx. See
#   scripts/bench_cluster.sh.
# latency: glass-to-glass through livegate: a wall-clock-stamped ffmpeg publish played by hls.js
#   in headless Chromium (tests/browser/latency.mjs reads the stamp on every displayed frame),
#   passthrough and ladder, direct and through the nginx edge, lowLatencyMode off, on, and on with
#   maxLiveSyncPlaybackRate 1.5; 10 s
#   warm-up then SECONDS (default 30) each; a third argument sets the picture size (default
#   1280x720). See scripts/bench_latency.py.
# blocking: one 720p30 passthrough stream and VIEWERS (default 200) hls.js-like LL-HLS viewers
#   (blocking reload for the hinted part, then the part, in a loop) for SECONDS (default 30):
#   server CPU and RSS against the same stream with no viewer in the same run, requests/s, how
#   long reloads were held. Usage: scripts/bench.sh blocking [VIEWERS] [SECONDS].
# site: what the site features cost: the playback token check per request (wrk on a token path
#   against a public one, CPU-µs per request), thumbnails per stream (four 720p30 passthrough
#   streams with and without), chat fan-out to 500 WebSocket connections. See
#   scripts/bench_site.py (needs wrk).
# load: PUBLISHERS passthrough publishers (default 100) and VIEWERS hls.js-like viewers (default
#   10000, examples/load) for SECONDS (default 60) on one node: latency per request kind and per
#   5 s interval, errors, Gbit/s, server CPU/RSS/threads/fds over time, kernel TCP counters and
#   socket memory; then one segment from livegate and from nginx's
#   disk with wrk, same run. Usage: scripts/bench.sh load [PUBLISHERS] [VIEWERS] [SECONDS] [MODE]
#   [KBITS]; MODE ladder transcodes every publisher and plays LL-HLS, and reports dropped frames;
#   KBITS is the passthrough publishers' video bitrate (default 2500 at 720p; below 1500, 360p).
#   See scripts/bench_load.py.
# https: one stream's segment and playlist over plain HTTP/1.1, HTTPS/1.1 and HTTPS/2 from the same
#   server (h2load, nghttp2-client): req/s, MB/s, server CPU per request and its ratio to plain
#   HTTP; and a TLS handshake per request. scripts/bench_https.py.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-ingest}
secs=${2:-60}
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -q --bin livegate --example pace_publish --example load
case "$mode" in
  ingest) ;;
  ladder) exec python3 scripts/bench_ladder.py "$secs" ${3:+"$3"} ;;
  codecs) exec bash scripts/bench_codecs.sh "${2:-30}" ;;
  cluster) exec bash scripts/bench_cluster.sh "${2:-10}" ;;
  latency) exec python3 scripts/bench_latency.py "${2:-30}" ${3:+"$3"} ;;
  blocking) exec python3 scripts/bench_blocking.py "${2:-200}" "${3:-30}" ;;
  site) exec python3 scripts/bench_site.py "${2:-10}" ;;
  https) exec python3 scripts/bench_https.py "${2:-10}" ;;
  load) exec python3 scripts/bench_load.py "${2:-100}" "${3:-10000}" "${4:-60}" "${5:-passthrough}" "${6:-2500}" ;;
  whip) exec unshare --net -- sh -c 'ip link set lo up && exec python3 scripts/bench_whip.py "$0"' "${2:-30}" ;;
  *) echo "usage: scripts/bench.sh ingest|ladder|codecs|whip|cluster|latency|blocking|site|load|https [SECONDS]" >&2; exit 2 ;;
esac
bin=$PWD/target/release/livegate
work=$(mktemp -d /tmp/livegate-bench.XXXXXX)
trap 'kill $server_pid 2>/dev/null || true; rm -rf "$work"' EXIT

echo "encoding a ${secs} s 720p30 source…"
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=1280x720:rate=30" \
  -f lavfi -i "sine=frequency=440:sample_rate=48000" -t "$secs" \
  -c:v libx264 -preset veryfast -pix_fmt yuv420p \
  -x264-params "bframes=3:b-pyramid=normal:keyint=60:min-keyint=60:scenecut=0" -b:v 3000k \
  -c:a aac -b:a 128k -f flv "$work/src.flv"

rtmp_port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
http_port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
export LIVEGATE_DATA_DIR=$work/data LIVEGATE_RTMP_LISTEN=127.0.0.1:$rtmp_port \
       LIVEGATE_HTTP_LISTEN=127.0.0.1:$http_port LIVEGATE_LOG=warn \
       LIVEGATE_TRANSCODE_ENABLED=false
key=$("$bin" keys add bench | tail -1)
"$bin" serve 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$http_port/healthz" >/dev/null && break; sleep 0.1; done

cpu_of() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }  # utime+stime, clock ticks
publish() {  # publish the file once; $1 = playlist polling interval in ms
  target/release/examples/pace_publish "$work/src.flv" "rtmp://127.0.0.1:$rtmp_port/live/$key" \
    "http://127.0.0.1:$http_port/live/bench" "$1"
}
echo "pass 1: delays (playlist polled every 2 ms)…"
publish 2 > "$work/result.json"
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")  # peak with one stream (incl. its window)
sleep 2
echo "pass 2: CPU and memory (playlist polled every 1 s, like a player)…"
cpu0=$(cpu_of)
publish 1000 > /dev/null
sleep 1
cpu1=$(cpu_of)
python3 - "$work/result.json" "$cpu0" "$cpu1" "$hwm" "$secs" "$(getconf CLK_TCK)" <<'PY'
import json, statistics, sys
result = json.load(open(sys.argv[1]))
cpu0, cpu1, hwm, secs, hz = map(float, sys.argv[2:7])
d = sorted(result["segment_delays_ms"])
p95 = d[min(len(d) - 1, round(0.95 * (len(d) - 1)))]
print(f"segments measured:            {len(d)}")
print(f"first master playlist after:  {result['first_master_s']:.2f} s (from the first media sent)")
print(f"segment availability delay:   median {statistics.median(d):.1f} ms, p95 {p95:.1f} ms, max {d[-1]:.1f} ms")
print(f"server CPU over the run:      {(cpu1 - cpu0) / hz:.2f} CPU-s for {secs:.0f} s of 720p30")
print(f"server peak RSS:              {hwm / 1024:.1f} MB (after pass 1: one stream, its live window in memory)")
PY

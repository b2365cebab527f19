#!/usr/bin/env bash
# scripts/bench.sh cluster [SECONDS]: two release-built livegate nodes sharing one redis-server,
# the shipped nginx edge (nginx/livegate-edge.conf, with Debian's defaults: worker_processes auto,
# sendfile on) in front of both, one 720p30 passthrough
# stream published on node A. For a segment and the media playlist, wrk (4 threads' worth of
# connections on 1 thread, SECONDS each, default 10) measures requests/s and latency served
#   direct by the owner (A), through the other node (B proxies to A), and through nginx (cached),
# and prints each as a ratio of the owner's figure measured in the same run, with the CPU-seconds
# both livegate nodes spent during that run (what the edge takes off the origin).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
command -v wrk >/dev/null || { echo "bench cluster needs wrk: apt-get install wrk" >&2; exit 1; }
bin=$PWD/target/release/livegate
work=$(mktemp -d /tmp/livegate-bench-cluster.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  sleep 0.5; rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

redis_port=$(port)
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no >/dev/null &
pids+=($!)
export LIVEGATE_CLUSTER_REDIS_URL=redis://127.0.0.1:$redis_port LIVEGATE_LOG=warn \
       LIVEGATE_TRANSCODE_ENABLED=false LIVEGATE_WHIP_ENABLED=false LIVEGATE_RECORD_ENABLED=false
declare -A http rtmp node_pid
for n in a b; do
  http[$n]=$(port); rtmp[$n]=$(port)
  LIVEGATE_DATA_DIR=$work/$n LIVEGATE_CLUSTER_NODE_ID=node-$n \
    LIVEGATE_HTTP_LISTEN=127.0.0.1:${http[$n]} LIVEGATE_RTMP_LISTEN=127.0.0.1:${rtmp[$n]} \
    "$bin" serve 2>"$work/node-$n.log" &
  pids+=($!); node_pid[$n]=$!
done
for n in a b; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:${http[$n]}/healthz" >/dev/null && break; sleep 0.1; done
done
key=$(LIVEGATE_DATA_DIR=$work/a "$bin" keys add bench | tail -1)

edge_port=$(port)
mkdir -p "$work/edge"
sed -e "s|/var/cache/nginx/livegate|$work/edge/cache|" \
    -e "s|server 127.0.0.1:8080; .*|server 127.0.0.1:${http[a]}; server 127.0.0.1:${http[b]};|" \
    -e "s|listen 80;|listen 127.0.0.1:$edge_port;|" nginx/livegate-edge.conf > "$work/edge/edge.conf"
cat > "$work/edge/nginx.conf" <<CONF
user root; daemon on; worker_processes auto; pid $work/nginx.pid; error_log $work/edge/error.log;
events { worker_connections 1024; }
http { access_log off; sendfile on; tcp_nopush on; client_body_temp_path $work/edge/body; proxy_temp_path $work/edge/proxy;
  fastcgi_temp_path $work/edge/f; uwsgi_temp_path $work/edge/u; scgi_temp_path $work/edge/s;
  include $work/edge/edge.conf; }
CONF
nginx -e "$work/edge/error.log" -p "$work/edge" -c "$work/edge/nginx.conf"

echo "publishing 720p30 passthrough on node A…"
ffmpeg -hide_banner -loglevel error -re -f lavfi -i "testsrc2=size=1280x720:rate=30" \
  -f lavfi -i "sine=frequency=440:sample_rate=48000" -t $((secs * 8 + 30)) \
  -c:v libx264 -preset ultrafast -tune zerolatency -g 60 -pix_fmt yuv420p -b:v 3000k \
  -c:a aac -b:a 128k -f flv "rtmp://127.0.0.1:${rtmp[a]}/live/$key" &
pids+=($!)
owner=http://127.0.0.1:${http[a]}
for _ in $(seq 100); do
  curl -fs "$owner/live/bench/source/index.m3u8" | grep -q '\.m4s' && break; sleep 0.2
done
sleep 5
newest() { curl -fs "$owner/live/bench/source/index.m3u8" | grep '\.m4s' | tail -1; }
bytes=$(curl -fs "$owner/live/bench/source/$(newest)" | wc -c)
echo "segments of ~$bytes bytes (each run asks for the newest one: it stays in the live window"
echo "longer than a run); $secs s per run, 64 connections, 1 wrk thread"
echo
# CPU-seconds both livegate nodes have used so far.
origin_cpu() {
  local ticks=0
  for n in a b; do ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/${node_pid[$n]}/stat"))); done
  python3 -c "print($ticks / $(getconf CLK_TCK))"
}
run() { # path base → "req/s p50 p99 non-2xx"
  wrk -t1 -c64 -d"${secs}s" --latency "$2$1" 2>&1 | awk '
    /Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
    /Non-2xx/ {err=$NF} END {printf "%s %s %s %s\n", rps, p50, p99, (err==""?0:err)}'
}
printf "%-9s %-11s %10s %7s %9s %9s %8s %14s\n" what via "req/s" ratio p50 p99 non-2xx "origin CPU-s"
for what in segment playlist; do
  ref=
  for via in owner other-node nginx; do
    path=/live/bench/source/$(newest)
    [ $what = playlist ] && path=/live/bench/source/index.m3u8
    case $via in
      owner) base=$owner ;;
      other-node) base=http://127.0.0.1:${http[b]} ;;
      nginx) base=http://127.0.0.1:$edge_port ;;
    esac
    cpu0=$(origin_cpu)
    read -r rps p50 p99 err < <(run "$path" "$base")
    cpu=$(python3 -c "print(f'{$(origin_cpu) - $cpu0:.2f}')")
    [ -z "$ref" ] && ref=$rps
    ratio=$(python3 -c "print(f'{$rps / $ref:.2f}')")
    printf "%-9s %-11s %10s %7s %9s %9s %8s %14s\n" "$what" "$via" "$rps" "$ratio" "$p50" "$p99" "$err" "$cpu"
  done
done
echo
echo "(wrk, nginx and both nodes share this machine's 2 cores: the ratios and the origin's CPU"
echo " matter, not the absolute req/s.)"

#!/usr/bin/env bash
# Captures real RTMP sessions and a real recording spool for the seed corpora:
#   - starts the real livegate binary (passthrough, recording on) on loopback,
#   - puts a recording TCP proxy (rtmp_proxy.py) between ffmpeg and it,
#   - publishes with ffmpeg (legacy FLV H.264/AAC), kills the server with SIGKILL mid-recording
#     so the spool (session.json + journal.jsonl) stays behind, and writes:
#       corpus/rtmp_session/seed-*       publisher → server bytes (first byte: read size)
#       corpus/rtmp_relay_client/seed-*  server → publisher bytes (what a relay target sends)
#       corpus/record_spool/seed-*       session.json NUL journal.jsonl
#       corpus/vod_playlist/seed-*       the recording's stored index.m3u8
# Usage: capture_rtmp.sh LIVEGATE_BINARY CORPUS_DIR
set -euo pipefail
BIN=$(realpath "$1"); CORPUS=$(realpath "$2"); HERE=$(dirname "$(realpath "$0")")
WORK=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RTMP=$(port); HTTP=$(port); PROXY=$(port)
cat > "$WORK/livegate.toml" <<TOML
data_dir = "$WORK/data"
[rtmp]
listen = "127.0.0.1:$RTMP"
[http]
listen = "127.0.0.1:$HTTP"
[hls]
segment_duration = 1.0
[transcode]
enabled = false
TOML
KEY=$("$BIN" keys add alice --config "$WORK/livegate.toml" | tail -1)
"$BIN" serve --config "$WORK/livegate.toml" 2>"$WORK/server.log" &
SERVER=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HTTP/healthz" >/dev/null && break; sleep 0.1; done

capture() { # name, ffmpeg args...
    local name=$1; shift
    python3 "$HERE/rtmp_proxy.py" "$PROXY" "$RTMP" "$WORK/$name" &
    local proxy=$!
    sleep 0.3
    timeout 20 nice -n 10 ffmpeg -hide_banner -loglevel error -re "$@" \
        -f flv "rtmp://127.0.0.1:$PROXY/live/$KEY" || true
    wait $proxy || true
}
# A short publish: the whole session, handshake to deleteStream.
capture short -f lavfi -i testsrc2=size=64x36:rate=10 -f lavfi -i sine=sample_rate=44100 -t 0.6 \
    -c:v libx264 -g 5 -c:a aac -b:a 16k
# A longer one (B-frames) recorded for 3 s, the server killed while it still publishes.
python3 "$HERE/rtmp_proxy.py" "$PROXY" "$RTMP" "$WORK/long" &
PROXY_PID=$!
sleep 0.3
nice -n 10 ffmpeg -hide_banner -loglevel error -re -f lavfi -i testsrc2=size=96x54:rate=10 \
    -f lavfi -i sine=sample_rate=48000 -t 30 -c:v libx264 -bf 2 -g 10 -c:a aac -b:a 24k \
    -f flv "rtmp://127.0.0.1:$PROXY/live/$KEY" &
FFMPEG=$!
sleep 4.5
kill -9 $SERVER; wait $SERVER 2>/dev/null || true
kill $FFMPEG 2>/dev/null || true; wait $FFMPEG 2>/dev/null || true
wait $PROXY_PID 2>/dev/null || true

# The key in the captures is a throwaway one, still: the seeds carry a dummy of the same length.
python3 - "$KEY" "$WORK"/*.c2s "$WORK"/*.s2c <<'PY'
import sys
key = sys.argv[1].encode()
for path in sys.argv[2:]:
    data = open(path, "rb").read()
    open(path, "wb").write(data.replace(key, b"lg_" + b"0" * (len(key) - 3)))
PY
mkdir -p "$CORPUS"/{rtmp_session,rtmp_relay_client,record_spool,vod_playlist}
for name in short long; do
    # Reads of 4096 bytes (selector 5) for the publisher, 1537 (selector 4) for the server; the
    # long capture is cut to its first 6 KiB (handshake, connect, publish, first tags).
    { printf '\x05'; head -c 6144 "$WORK/$name.c2s"; } > "$CORPUS/rtmp_session/seed-$name"
    { printf '\x04'; head -c 6144 "$WORK/$name.s2c"; } > "$CORPUS/rtmp_relay_client/seed-$name"
    # The same sessions after the 3073-byte handshake (selector bit 3: start in the session).
    { printf '\x0d'; tail -c +3074 "$WORK/$name.c2s" | head -c 6144; } \
        > "$CORPUS/rtmp_session/seed-$name-session"
    { printf '\x0c'; tail -c +3074 "$WORK/$name.s2c" | head -c 6144; } \
        > "$CORPUS/rtmp_relay_client/seed-$name-session"
done
# One byte a read: every chunk boundary at every position.
{ printf '\x00'; head -c 4000 "$WORK/short.c2s"; } > "$CORPUS/rtmp_session/seed-short-bytewise"
SESSION=$(dirname "$(find "$WORK/data/spool" -name session.json | head -1)")
{ cat "$SESSION/session.json"; printf '\0'; cat "$SESSION/journal.jsonl"; } \
    > "$CORPUS/record_spool/seed-interrupted"
PLAYLIST=$(find "$WORK/data/recordings" -name index.m3u8 | head -1)
if [ -n "$PLAYLIST" ]; then cp "$PLAYLIST" "$CORPUS/vod_playlist/seed-live"; fi
# A restart recovers the spool and finalizes the recording: its VOD playlist and manifest.
"$BIN" serve --config "$WORK/livegate.toml" 2>>"$WORK/server.log" &
SERVER=$!
for _ in $(seq 100); do
    grep -qs interrupted "$(find "$WORK/data/recordings" -name manifest.json | head -1)" && break
    sleep 0.1
done
kill $SERVER; wait $SERVER 2>/dev/null || true
cp "$(find "$WORK/data/recordings" -name index.m3u8 | head -1)" "$CORPUS/vod_playlist/seed-vod"
cp "$(find "$WORK/data/recordings" -name manifest.json | head -1)" "$CORPUS/record_spool/seed-manifest"
ls -la "$CORPUS"/{rtmp_session,rtmp_relay_client,record_spool,vod_playlist}

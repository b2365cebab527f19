#!/usr/bin/env bash
# Command 1: set up and run livegate on its embedded defaults (local disk under ./data, built-in
# key store). Creates a demo stream key on first run and prints how to publish and where to watch.
# Any LIVEGATE_* variable (see config/livegate.toml) or LIVEGATE_CONFIG=FILE applies.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh run
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked
bin=target/release/livegate

user=${LIVEGATE_DEMO_USER:-demo}
# The server refuses a LIVEGATE_* variable it does not know; this one is the script's own.
unset LIVEGATE_DEMO_USER
if ! "$bin" keys list | cut -f1 | grep -qx "$user"; then
  echo
  "$bin" keys add "$user"
else
  echo
  echo "Stream key for '$user' exists (keys are stored hashed, so it cannot be shown again)."
  echo "New one: $bin keys rotate $user"
fi
echo
echo "Publish with ffmpeg:  ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine \\"
echo "    -c:v libx264 -preset veryfast -g 60 -c:a aac -f flv rtmp://localhost/live/<key>"
echo "Or from this machine's browser (camera and microphone, WebRTC/WHIP): http://localhost:8080/publish"
echo "    OBS 30+: Service WHIP, Server http://HOST:8080/whip/$user, Bearer Token = the key (UDP 8189 open)"
echo "Watch:  ffplay http://localhost:8080/live/$user/index.m3u8  (or any HLS player, e.g. hls.js)"
echo
exec "$bin" serve

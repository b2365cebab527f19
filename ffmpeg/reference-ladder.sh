#!/usr/bin/env bash
# The reference the ladder benchmark measures livegate against: the ffmpeg-CLI ladder of the
# design livegate replaces (one ffmpeg process per stream, three HLS outputs, each with its own
# scale and its own AAC encode), with the same rungs and x264 settings as livegate's default
# ladder and that design's known bugs fixed (GOP from the real frame rate, even widths from the
# source's aspect ratio with square pixels).
#
# Usage: ffmpeg/reference-ladder.sh INPUT OUTDIR [FPS]
#   Writes OUTDIR/{360p,480p,720p}/index.m3u8 (fMP4 HLS, 2 s segments). FPS (default 30) sets
#   the 2 s GOP. Rungs taller than the input are skipped, as livegate does.
set -euo pipefail
in=$1
out=$2
fps=${3:-30}
gop=$((fps * 2))
height=$(ffprobe -v error -select_streams v:0 -show_entries stream=height -of csv=p=0 "$in")

# livegate's transcode.low_delay (default true) is x264's tune=zerolatency.
tune=()
[ "${LIVEGATE_TRANSCODE_LOW_DELAY:-true}" = true ] && tune=(-tune zerolatency)

args=()
# name height bitrate maxrate bufsize — the same as config/livegate.toml's default ladder
while read -r name h b maxrate bufsize; do
  [ "$h" -le "$height" ] || continue
  mkdir -p "$out/$name"
  args+=(
    -map 0:v:0 -map 0:a:0
    -vf "scale=-2:$h"
    -fps_mode passthrough -c:v libx264 -preset veryfast "${tune[@]}" -profile:v main -pix_fmt yuv420p
    -b:v "$b" -maxrate "$maxrate" -bufsize "$bufsize"
    -g "$gop" -keyint_min "$gop" -sc_threshold 0
    -c:a aac -b:a 128k -ar 48000
    -f hls -hls_time 2 -hls_playlist_type vod -hls_segment_type fmp4
    -hls_segment_filename "$out/$name/seg%05d.m4s" "$out/$name/index.m3u8"
  )
done <<'LADDER'
360p 360 800k 856k 1200k
480p 480 1400k 1498k 2100k
720p 720 2800k 2996k 4200k
LADDER

exec ffmpeg -hide_banner -loglevel error -nostdin -y -i "$in" "${args[@]}"

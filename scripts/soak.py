#!/usr/bin/env python3
"""Soak: one livegate node publishing and playing for HOURS (scripts/soak.sh HOURS [OUT_DIR]).

Publishers (all looped, so they run as long as the soak):
  ladder  RTMP, 854x480 30 fps H.264/AAC through the ladder (360p + 480p), recorded
  pass1   RTMP, 640x360 served as published (transcode.passthrough_users), recorded
  pass2   RTMP, 640x360 served as published, recorded
  webrtc  WHIP from headless Chromium's fake camera and microphone (H.264 + Opus) into a ladder
Players: examples/load viewers (hls.js-like: 60 classic, 20 LL-HLS with blocking reloads and
parts, 5% switching rungs) over every stream, and one real hls.js page in Chromium (LL-HLS) on
the ladder stream.

Watched:
  every 30 s   the server's RSS, threads, fds, CPU (/proc), HTTP egress, transcode drops
  every 1 s    every media playlist: TARGETDURATION changes, media sequence going back, a
               playlist not advancing, EXTINF above the target, DISCONTINUITY, PDT not
               increasing, PDT gaps/overlaps against the previous EXTINF (> 100 ms)
  every 5 min  A/V drift: first audio minus first video presentation time in the newest segment
               of each stream's top rendition (ffprobe), over time
Results: OUT_DIR/samples.csv (one line per 30 s), OUT_DIR/report.md (start / end / peak of every
curve, anomalies with examples, viewers' request stats, the hls.js page's report). Runs inside a
network namespace with only loopback when started as root by soak.sh.
"""
import csv
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime

HOURS = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
OUT = sys.argv[2] if len(sys.argv) > 2 else f"target/soak-{time.strftime('%Y%m%d-%H%M%S')}"
SECS = int(HOURS * 3600)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = f"{ROOT}/target/release/livegate"
LOAD = f"{ROOT}/target/release/examples/load"
BROWSER = f"{ROOT}/tests/browser"
ADMIN = "soak-admin-token"
TICK = os.sysconf("SC_CLK_TCK")
STREAMS = ["ladder", "pass1", "pass2", "webrtc"]


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def api(base, method, path, body=None):
    req = urllib.request.Request(f"{base}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"authorization": f"Bearer {ADMIN}",
                                          "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read()
    return json.loads(text) if text else None


def proc_usage(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    status = open(f"/proc/{pid}/status").read()
    field = lambda name: int(re.search(rf"^{name}:\s+(\d+)", status, re.M).group(1))
    return {"cpu_secs": cpu, "rss_mib": field("VmRSS") / 1024, "threads": field("Threads"),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def metric(text, name):
    m = re.search(rf"^{re.escape(name)} ([\d.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def clip(path, size, seconds=60):
    # Whole AAC frames and whole video frames end together every 0.5333 s; 60.8 s is 114 of those,
    # so a looped clip has no audio gap or overlap at the loop point.
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size={size}:rate=30", "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=48000", "-t", "60.8", "-c:v", "libx264",
                    "-preset", "veryfast", "-pix_fmt", "yuv420p", "-x264-params",
                    "keyint=60:min-keyint=60:scenecut=0", "-b:v", "800k", "-c:a", "aac", "-b:a",
                    "96k", "-f", "flv", path], check=True)


class PlaylistWatch:
    """Every media playlist of every stream, once a second: anomalies with examples."""

    def __init__(self, base):
        self.base = base
        self.state = {}  # url -> dict(target, msn, seen_at, last_pdt_end)
        self.counts = {}
        self.examples = {}
        self.checked = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def anomaly(self, kind, detail):
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.examples.setdefault(kind, [])
            if len(self.examples[kind]) < 5:
                self.examples[kind].append(f"{datetime.now().isoformat(timespec='seconds')} {detail}")

    def media_urls(self, stream):
        master = get(f"{self.base}/live/{stream}/index.m3u8").decode()
        uris = [l for l in master.splitlines() if l and not l.startswith("#")]
        return [f"{self.base}/live/{stream}/{u}" for u in uris]

    def check(self, url, text, now):
        target = int(re.search(r"#EXT-X-TARGETDURATION:(\d+)", text).group(1))
        msn = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1))
        name = url.split("/live/", 1)[1]
        newest = msn + text.count("#EXTINF:") - 1
        st = self.state.setdefault(url, {"target": target, "msn": msn, "newest": newest,
                                         "advanced_at": now, "segments": {}})
        if target != st["target"]:
            self.anomaly("target_duration_changed", f"{name}: {st['target']} -> {target}")
            st["target"] = target
        if msn < st["msn"]:
            self.anomaly("media_sequence_backwards", f"{name}: {st['msn']} -> {msn}")
        # A new segment at least every 3 target durations (the live window's first ones included).
        if newest > st["newest"]:
            st["advanced_at"] = now
        elif now - st["advanced_at"] > 3 * target + 2:
            self.anomaly("playlist_stalled",
                         f"{name}: no segment after #{newest} for {now - st['advanced_at']:.0f} s")
            st["advanced_at"] = now
        st["msn"], st["newest"] = msn, newest
        if "#EXT-X-DISCONTINUITY\n" in text:
            self.anomaly("discontinuity", f"{name} at msn {msn}")
        # Whole segments: their PDT, duration; parts and hints are skipped.
        segments, pdt = [], None
        for line in text.splitlines():
            if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
                pdt = datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00")).timestamp()
            elif line.startswith("#EXTINF:"):
                duration = float(line[8:].split(",")[0])
            elif line and not line.startswith("#"):
                segments.append((pdt, duration, line))
        for i, (start, duration, uri) in enumerate(segments):
            seq = msn + i
            if seq in st["segments"]:
                continue
            st["segments"][seq] = (start, duration)
            if duration > target + 0.5:
                self.anomaly("extinf_over_target", f"{name} #{seq}: {duration:.3f} > {target}")
            before = st["segments"].get(seq - 1)
            if before and start is not None and before[0] is not None:
                if start <= before[0]:
                    self.anomaly("pdt_not_increasing", f"{name} #{seq}")
                gap = start - (before[0] + before[1])
                if abs(gap) > 0.1:
                    self.anomaly("pdt_gap", f"{name} #{seq}: {gap * 1000:+.0f} ms")
        for seq in [s for s in st["segments"] if s < msn - 20]:
            del st["segments"][seq]
        self.checked += 1

    def run(self):
        urls = {}
        while not self.stop.is_set():
            now = time.time()
            for stream in STREAMS:
                try:
                    if stream not in urls:
                        urls[stream] = self.media_urls(stream)
                    for url in urls[stream]:
                        self.check(url, get(url).decode(), now)
                except Exception as e:  # a refused or failed fetch is an anomaly, not an end
                    urls.pop(stream, None)
                    self.anomaly("fetch_failed", f"{stream}: {e}")
            self.stop.wait(1.0)


def av_offset(base, stream):
    """First audio minus first video presentation time (s) in the newest whole segment."""
    master = get(f"{base}/live/{stream}/index.m3u8").decode()
    top = [l for l in master.splitlines() if l and not l.startswith("#")][-1]
    url = f"{base}/live/{stream}/{top}"
    text = get(url).decode()
    folder = url.rsplit("/", 1)[0]
    init = re.findall(r'#EXT-X-MAP:URI="([^"]+)"', text)[-1]
    segment = [l for l in text.splitlines() if l and not l.startswith("#")][-1]
    data = get(f"{folder}/{init}") + get(f"{folder}/{segment}")
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                          "packet=pts_time,stream_index:stream=index,codec_type", "-of", "json",
                          "-"], input=data, capture_output=True).stdout
    v = json.loads(out)
    kinds = {s["index"]: s["codec_type"] for s in v.get("streams", [])}
    first = {}
    for p in v.get("packets", []):
        kind = kinds.get(p["stream_index"])
        t = float(p.get("pts_time", "nan"))
        if kind and t == t:
            first[kind] = min(first.get(kind, t), t)
    return first["audio"] - first["video"] if "audio" in first and "video" in first else None


def curve(rows, key):
    values = [float(r[key]) for r in rows]
    warm = values[min(10, len(values) - 1)]  # after 5 minutes
    return values[0], warm, values[-1], max(values)


def main():
    os.makedirs(OUT, exist_ok=True)
    work = f"{OUT}/work"
    os.makedirs(work, exist_ok=True)
    procs = []
    log = open(f"{OUT}/soak.log", "a")
    say = lambda text: (print(text, flush=True), log.write(text + "\n"), log.flush())
    say(f"soak: {HOURS} h from {datetime.now().isoformat(timespec='seconds')}, results in {OUT}")
    clip(f"{work}/480p.flv", "854x480")
    clip(f"{work}/360p.flv", "640x360")
    http, rtmp, whip = free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    base = f"http://127.0.0.1:{http}"
    env = dict(os.environ, LIVEGATE_DATA_DIR=f"{work}/data", LIVEGATE_LOG="info",
               LIVEGATE_RTMP_LISTEN=f"127.0.0.1:{rtmp}", LIVEGATE_HTTP_LISTEN=f"127.0.0.1:{http}",
               LIVEGATE_WHIP_UDP_LISTEN=f"127.0.0.1:{whip}", LIVEGATE_HTTP_ADMIN_TOKEN=ADMIN,
               LIVEGATE_HTTP_PER_IP_EXEMPT="127.0.0.1",
               LIVEGATE_TRANSCODE_PASSTHROUGH_USERS="pass1,pass2",
               LIVEGATE_TRANSCODE_MAX_LADDERS="2", LIVEGATE_TRANSCODE_LADDER_NICE="0",
               # Recordings of hours: a day's retention is plenty, the soak checks they close.
               LIVEGATE_RECORD_ENABLED="true")
    server = subprocess.Popen([BIN, "serve"], env=env, stderr=open(f"{OUT}/server.log", "a"))
    procs.append(server)
    for _ in range(200):
        try:
            get(f"{base}/healthz")
            break
        except OSError:
            time.sleep(0.1)
    keys = {s: api(base, "POST", "/api/v1/keys", {"user": s})["key"] for s in STREAMS}
    for stream, source in [("ladder", "480p"), ("pass1", "360p"), ("pass2", "360p")]:
        procs.append(subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop",
             "-1", "-i", f"{work}/{source}.flv", "-c", "copy", "-f", "flv",
             f"rtmp://127.0.0.1:{rtmp}/live/{keys[stream]}"],
            stderr=open(f"{OUT}/ffmpeg-{stream}.log", "w")))
    publish_page = (f"{base}/publish?key={keys['webrtc']}&codec=H264&auto=1"
                    f"&width=320&height=180")
    procs.append(subprocess.Popen(["node", f"{BROWSER}/publish.mjs", "--seconds", str(SECS + 120),
                                   "--end", "leave", "--timeout", "60", publish_page],
                                  stdout=open(f"{OUT}/whip-publisher.json", "w"),
                                  stderr=open(f"{OUT}/whip-publisher.log", "w")))
    for stream in STREAMS:
        for _ in range(600):
            try:
                get(f"{base}/live/{stream}/index.m3u8")
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"{stream} never went live; see {OUT}/server.log")
    say("all four streams live")
    viewers = [
        subprocess.Popen([LOAD, "viewers", "--base", base, "--streams", ",".join(STREAMS),
                          "--viewers", "60", "--secs", str(SECS), "--ramp-secs", "30",
                          "--every", "60"],
                         stdout=open(f"{OUT}/viewers-classic.json", "w"),
                         stderr=open(f"{OUT}/viewers-classic.log", "w")),
        subprocess.Popen([LOAD, "viewers", "--base", base, "--streams", ",".join(STREAMS),
                          "--viewers", "20", "--ll", "--secs", str(SECS), "--ramp-secs", "30",
                          "--every", "60"],
                         stdout=open(f"{OUT}/viewers-ll.json", "w"),
                         stderr=open(f"{OUT}/viewers-ll.log", "w")),
    ]
    player = subprocess.Popen(["node", f"{BROWSER}/play.mjs", f"{base}/live/ladder/index.m3u8",
                               "--seconds", str(SECS - 60), "--timeout", str(SECS),
                               "--low-latency", "1"],
                              stdout=open(f"{OUT}/hlsjs.json", "w"),
                              stderr=open(f"{OUT}/hlsjs.log", "w"))
    procs += viewers + [player]
    watch = PlaylistWatch(base)
    watcher = threading.Thread(target=watch.run, daemon=True)
    watcher.start()

    fields = ["t_secs", "rss_mib", "threads", "fds", "cpu", "egress_mbit", "dropped_frames",
              "whip_sessions", "live_streams", "playlists_checked"]
    rows, drift = [], {s: [] for s in STREAMS}
    started = time.time()
    last_cpu, last_egress, last_at = None, None, None
    with open(f"{OUT}/samples.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(fields)
        next_drift = 0.0
        while time.time() - started < SECS:
            now = time.time()
            try:
                usage = proc_usage(server.pid)
                text = get(f"{base}/metrics").decode()
            except Exception as e:
                say(f"sample failed: {e}")
                if server.poll() is not None:
                    say(f"the server exited with {server.returncode}")
                    break
                time.sleep(30)
                continue
            egress = metric(text, "livegate_http_response_bytes_total")
            cpu = (usage["cpu_secs"] - last_cpu) / (now - last_at) if last_at else 0.0
            mbit = (egress - last_egress) * 8 / 1e6 / (now - last_at) if last_at else 0.0
            last_cpu, last_egress, last_at = usage["cpu_secs"], egress, now
            row = {"t_secs": round(now - started), "rss_mib": round(usage["rss_mib"], 1),
                   "threads": usage["threads"], "fds": usage["fds"], "cpu": round(cpu, 3),
                   "egress_mbit": round(mbit, 2),
                   "dropped_frames": metric(text, "livegate_transcode_dropped_frames_total"),
                   "whip_sessions": metric(text, "livegate_whip_sessions"),
                   "live_streams": metric(text, "livegate_live_streams"),
                   "playlists_checked": watch.checked}
            rows.append(row)
            out.writerow([row[k] for k in fields])
            f.flush()
            if now - started >= next_drift:
                next_drift += 300
                for stream in STREAMS:
                    try:
                        d = av_offset(base, stream)
                        if d is not None:
                            drift[stream].append((round(now - started), d))
                    except Exception as e:
                        watch.anomaly("av_probe_failed", f"{stream}: {e}")
            time.sleep(max(0.0, 30 - (time.time() - now)))

    watch.stop.set()
    watcher.join(timeout=5)
    for v in viewers:
        try:
            v.wait(timeout=120)
        except subprocess.TimeoutExpired:
            v.kill()
    try:
        player.wait(timeout=180)
    except subprocess.TimeoutExpired:
        player.kill()
    for p in procs[1:]:
        if p.poll() is None:
            p.terminate()
    time.sleep(5)
    recordings = api(base, "GET", "/api/v1/recordings?limit=20")
    server.terminate()
    server.wait(timeout=30)
    for p in procs:
        if p.poll() is None:
            p.kill()

    # The report.
    def last_json(path):
        try:
            lines = [l for l in open(path).read().splitlines() if l.strip()]
            return json.loads(lines[-1]) if lines else None
        except (OSError, ValueError):
            return None

    r = [f"# Soak: {HOURS} h, {datetime.now().isoformat(timespec='seconds')}", "",
         f"server exit code {server.returncode}; samples every 30 s: {len(rows)}", "",
         "| curve | at start | after 5 min | at end | peak |", "|---|---|---|---|---|"]
    for key in ["rss_mib", "threads", "fds", "cpu", "egress_mbit"]:
        if rows:
            a, w, e, p = curve(rows, key)
            r.append(f"| {key} | {a:g} | {w:g} | {e:g} | {p:g} |")
    if len(rows) > 20:
        hours = (rows[-1]["t_secs"] - rows[10]["t_secs"]) / 3600
        growth = (rows[-1]["rss_mib"] - rows[10]["rss_mib"]) / hours if hours > 0 else 0
        r.append(f"\nRSS growth after warm-up: {growth:+.1f} MiB/h; CPU mean "
                 f"{statistics.mean(x['cpu'] for x in rows[1:]):.2f} CPU-s/s; transcode dropped "
                 f"frames at end {rows[-1]['dropped_frames']:g}")
    r += ["", f"## Playlists ({watch.checked} checks)"]
    r += [f"- {k}: {v} — e.g. {watch.examples[k][:3]}" for k, v in sorted(watch.counts.items())]
    if not watch.counts:
        r.append("- no anomaly")
    r += ["", "## A/V offset (first audio − first video pts, newest segment, top rendition)"]
    for stream, points in drift.items():
        if points:
            values = [d for _, d in points]
            r.append(f"- {stream}: first {values[0] * 1000:+.0f} ms, last {values[-1] * 1000:+.0f} "
                     f"ms, range {min(values) * 1000:+.0f}…{max(values) * 1000:+.0f} ms "
                     f"({len(values)} probes)")
    for name in ["viewers-classic", "viewers-ll"]:
        v = last_json(f"{OUT}/{name}.json")
        if v:
            r += ["", f"## {name}: {v['requests']} requests, errors {v['errors']} "
                      f"{v['summary'].get('errors')}"]
            for kind, k in v["summary"]["kinds"].items():
                r.append(f"- {kind}: {k['count']}, p50 {k['p50_ms']:.1f} ms, p99 "
                         f"{k['p99_ms']:.1f} ms, max {k['max_ms']:.1f} ms")
    h = last_json(f"{OUT}/hlsjs.json")
    if h:
        r += ["", f"## hls.js page: played {h.get('currentTime', 0):.0f} s, stalls "
                  f"{h.get('stalls')}, fatal {h.get('fatal')}, errors {h.get('errors', [])[:10]}"]
    w = last_json(f"{OUT}/whip-publisher.json")
    if w:
        r += ["", f"## WHIP publisher: {w[0].get('state')}, error {w[0].get('error')}"]
    if recordings is not None:
        r += ["", "## Recordings"]
        items = recordings if isinstance(recordings, list) else recordings.get("recordings", [])
        for rec in items:
            r.append(f"- {rec.get('user')}: {rec.get('state')}, {rec.get('duration_secs', 0):.0f} s, "
                     f"{rec.get('segments')} segments, missing {rec.get('missing_segments')}")
    open(f"{OUT}/report.md", "w").write("\n".join(r) + "\n")
    say("\n".join(r))
    shutil.rmtree(f"{work}/data/recordings", ignore_errors=True)


if __name__ == "__main__":
    main()

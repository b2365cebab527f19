#!/usr/bin/env python3
"""Glass-to-glass latency benchmark (scripts/bench.sh latency [SECONDS]).

ffmpeg publishes a 30 fps testsrc2 picture (SIZE, default 1280x720) over RTMP with the wall clock
(low 32 bits of the ms clock) drawn into every frame as black/white blocks; tests/browser/latency.mjs
plays it with hls.js in headless Chromium and reads the stamp on every displayed frame. Cases:
passthrough and the default ladder, each played direct from livegate and through the shipped nginx
edge (nginx/livegate-edge.conf), each with hls.js lowLatencyMode off, on, and on with the catch-up
rate README advises (maxLiveSyncPlaybackRate 1.5); 10 s warm-up then
SECONDS (default 30) measured. Prints per case: the rendition played, glass-to-glass median and
p95, hls.latency, hls.targetLatency, ingest-to-screen (now − the playing PROGRAM-DATE-TIME, which
livegate anchors at ingest), stalls (<video> 'waiting' events plus hls.js BUFFER_STALLED_ERRORs
after playback began, warm-up included), the player's media clock rate (media time / wall time;
below 1.00x the player was starved and latency grew without stalls), how busy the host's CPUs
were meanwhile and the frames the ladder dropped for falling behind real time (it then cuts long
segments, and EXT-X-TARGETDURATION, hence hls.js's target latency, grows); each case's full
latency.mjs JSON goes to stderr. One machine, one clock.

Usage: [LIVEGATE_BIN=path] scripts/bench_latency.py [SECONDS] [SIZE]
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.abspath(os.environ.get("LIVEGATE_BIN", os.path.join(ROOT, "target/release/livegate")))
PROBE = os.path.join(ROOT, "tests/browser/latency.mjs")
SECS = int(sys.argv[1]) if len(sys.argv) > 1 else 30
SIZE = sys.argv[2] if len(sys.argv) > 2 else "1280x720"
WARMUP = 10
FPS = 30
USER = "bench"

procs = []


def fail(msg, log):
    """Exits with the end of a log: the work directory holding it is removed on the way out."""
    try:
        tail = "".join(open(log).readlines()[-20:])
    except OSError:
        tail = ""
    sys.exit(f"{msg}; the end of {os.path.basename(log)}:\n{tail}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except Exception:
        return 0, ""


def start(cmd, log=None, **kw):
    # Own session each, so stopping one also stops its children (Chromium under node, nginx workers).
    p = subprocess.Popen(cmd, stdout=kw.pop("stdout", log), stderr=log, start_new_session=True, **kw)
    procs.append(p)
    return p


def stop(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        except ProcessLookupError:
            pass
    procs.remove(p)


def stamp_filter(width):
    """Bit i of the frame's ms wall clock as a white (1) or black (0) block of width/32 px; row 0
    holds bits 0-15, row 1 bits 16-31, from half a block off the top-left corner. The layout is
    what latency.mjs reads; blocks stay >= 16 px at the ladder's 360p from a 720p source."""
    b = width // 32
    boxes = [f"drawbox=x=0:y=0:w={17 * b}:h={3 * b}:color=black:t=fill"]
    for i in range(32):
        # t is pts/1000 as a double: +0.5 undoes its rounding back to the integer ms.
        boxes.append(f"drawbox=x={b // 2 + (i % 16) * b}:y={b // 2 + (i // 16) * b}:w={b}:h={b}"
                     f":color=white:t=fill:enable='mod(floor((t*1000+0.5)/{2 ** i}),2)'")
    # The clock stamp is taken as the frame leaves -re pacing; then back to a regular frame clock.
    return ",".join(["settb=1/1000", "setpts=RTCTIME/1000", *boxes, f"setpts=N/({FPS}*TB)"])


def publish(rtmp_url, log):
    return start(["ffmpeg", "-hide_banner", "-loglevel", "error",
                  "-re", "-f", "lavfi", "-i", f"testsrc2=size={SIZE}:rate={FPS}",
                  "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                  "-vf", stamp_filter(int(SIZE.split("x")[0])),
                  # ultrafast, not OBS's veryfast: 0.29 instead of 0.48 CPU-s per media-s at 720p30,
                  # left to the ladder on a 2-core machine; zerolatency either way (no lookahead).
                  "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", str(2 * FPS),
                  "-pix_fmt", "yuv420p", "-b:v", "3000k", "-c:a", "aac", "-b:a", "128k",
                  "-f", "flv", rtmp_url], log)


def edge(d, http_port):
    """The shipped edge conf in a private nginx (as scripts/bench_cluster.sh runs it), upstream
    rewritten to this node; run in the foreground so it is our child."""
    os.makedirs(d)
    port = free_port()
    conf = open(os.path.join(ROOT, "nginx/livegate-edge.conf")).read()
    conf = conf.replace("/var/cache/nginx/livegate", f"{d}/cache")
    conf = conf.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{http_port};")
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{port};")
    open(f"{d}/edge.conf", "w").write(conf)
    open(f"{d}/nginx.conf", "w").write(
        f"user root; daemon off; worker_processes auto; pid {d}/nginx.pid; error_log {d}/error.log;\n"
        "events { worker_connections 1024; }\n"
        f"http {{ access_log off; sendfile on; tcp_nopush on; client_body_temp_path {d}/body;\n"
        f"  proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u;\n"
        f"  scgi_temp_path {d}/s; include {d}/edge.conf; }}\n")
    start(["nginx", "-e", f"{d}/error.log", "-p", d, "-c", f"{d}/nginx.conf"])
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 10
    while get(base + "/healthz")[0] != 200:
        if time.time() > deadline:
            fail("nginx edge did not come up", f"{d}/error.log")
        time.sleep(0.1)
    return base


def wait_live(base, server, pub, log):
    """Until every rendition lists >= 4 segments: hls.js's classic target latency is 3 of them."""
    deadline = time.time() + 60
    while time.time() < deadline:
        if server.poll() is not None or pub.poll() is not None:
            break
        _, master = get(f"{base}/live/{USER}/index.m3u8")
        variants = [l for l in master.splitlines() if l.endswith(".m3u8")]
        if variants and all(get(f"{base}/live/{USER}/{v}")[1].count("#EXTINF") >= 4 for v in variants):
            return
        time.sleep(0.5)
    fail("stream never went live", log)


def cpu_times():
    """(busy, total) jiffies of the whole host, from /proc/stat."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(f) - f[3] - f[4], sum(f)


def ladder_drops(base):
    """Frames the ladder has dropped so far (it drops whole GOPs when behind real time), or None."""
    try:
        return json.loads(get(f"{base}/api/v1/streams")[1])[0]["transcode"]["dropped_frames"]
    except (ValueError, LookupError, TypeError):
        return None


# What README advises sites: hls.js's default playback rate never catches up to its target.
CATCH_UP = '{"maxLiveSyncPlaybackRate":1.5}'


def probe(url, low_latency, origin, hls_config=None):
    """latency.mjs's JSON, plus how busy the host was meanwhile and the frames the ladder dropped:
    on a saturated machine the ladder falls behind real time and the figures measure that."""
    busy0, total0 = cpu_times()
    drops0 = ladder_drops(origin)
    p = start(["node", PROBE, url, "--low-latency", str(low_latency), "--warmup", str(WARMUP),
               "--seconds", str(SECS)] + (["--hls-config", hls_config] if hls_config else []),
              stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate(timeout=WARMUP + SECS + 120)
    stop(p)
    busy1, total1 = cpu_times()
    lines = out.strip().splitlines()
    r = json.loads(lines[-1]) if lines else {"fatal": f"latency.mjs exited {p.returncode}"}
    r["host_cpu_busy"] = (busy1 - busy0) / (total1 - total0)
    drops1 = ladder_drops(origin)
    r["ladder_dropped_frames"] = None if drops0 is None or drops1 is None else drops1 - drops0
    return r


def run_mode(work, mode):
    http, rtmp = free_port(), free_port()
    # livegate rejects LIVEGATE_* variables it does not know; other LIVEGATE_* settings pass on.
    env = {k: v for k, v in os.environ.items() if k != "LIVEGATE_BIN"}
    env.update(LIVEGATE_DATA_DIR=f"{work}/{mode}", LIVEGATE_LOG="warn",
               LIVEGATE_HTTP_LISTEN=f"127.0.0.1:{http}", LIVEGATE_RTMP_LISTEN=f"127.0.0.1:{rtmp}",
               LIVEGATE_TRANSCODE_ENABLED=str(mode == "ladder").lower(),
               LIVEGATE_WHIP_ENABLED="false", LIVEGATE_RECORD_ENABLED="false")
    keys = subprocess.run([BIN, "keys", "add", USER], env=env, capture_output=True, text=True)
    if keys.returncode != 0:
        sys.exit(f"{BIN} keys add failed:\n{keys.stderr}")
    key = keys.stdout.strip().splitlines()[-1]
    log_path = f"{work}/{mode}.log"
    log = open(log_path, "w")
    server = start([BIN, "serve"], log, env=env)
    direct = f"http://127.0.0.1:{http}"
    while get(direct + "/healthz")[0] != 200:
        if server.poll() is not None:
            fail("livegate exited", log_path)
        time.sleep(0.05)
    pub = publish(f"rtmp://127.0.0.1:{rtmp}/live/{key}", log)
    wait_live(direct, server, pub, log_path)
    rows = []
    for via, base in (("direct", direct), ("nginx", edge(f"{work}/{mode}-edge", http))):
        for ll, config, label in ((0, None, "ll=0"), (1, None, "ll=1"), (1, CATCH_UP, "ll=1 rate1.5")):
            print(f"  {mode} {via} {label}: {WARMUP + SECS} s…", file=sys.stderr, flush=True)
            rows.append((f"{mode} {via} {label}",
                         probe(f"{base}/live/{USER}/index.m3u8", ll, direct, config)))
    for p in list(procs):
        stop(p)
    return rows


def fmt(x, unit):
    if x is None:
        return "-"
    return f"{x:.0f} ms" if unit == "ms" else f"{x:.2f} s"


def main():
    # SIGTERM (e.g. from a CI timeout) unwinds through the finally like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = tempfile.mkdtemp(prefix="livegate-bench-latency.")
    try:
        print(f"{SIZE}@{FPS} stamped source, {WARMUP} s warm-up + {SECS} s per case", file=sys.stderr)
        rows = run_mode(work, "passthrough") + run_mode(work, "ladder")
    finally:
        for p in list(procs):
            stop(p)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'case':26} {'played':>10} {'g2g med':>9} {'g2g p95':>9} {'hls.latency':>12}"
          f" {'target':>8} {'ingest→screen':>14} {'stalls':>7} {'clock':>6} {'host CPU':>9}"
          f" {'ladder drops':>13}")
    failed = False
    for case, r in rows:
        g = r.get("g2g_ms") or {}
        heights = r.get("frames_by_height") or {}
        played = "/".join(f"{h}p" for h in sorted(heights, key=int)) or "-"
        drops = "-" if r["ladder_dropped_frames"] is None else r["ladder_dropped_frames"]
        clock = f"{r['media_clock_rate']:.2f}x" if r.get("media_clock_rate") else "-"
        stalls = r["stalls"]["waiting"] + r["stalls"]["buffer_stalled"] if "stalls" in r else "-"
        print(f"{case:26} {played:>10} {fmt(g.get('median'), 'ms'):>9} {fmt(g.get('p95'), 'ms'):>9}"
              f" {fmt(r.get('hls_latency_s'), 's'):>12} {fmt(r.get('target_latency_s'), 's'):>8}"
              f" {fmt(r.get('ingest_to_screen_ms'), 'ms'):>14} {stalls:>7} {clock:>6}"
              f" {r['host_cpu_busy']:>8.0%} {drops:>13}")
        failed |= bool(r.get("fatal")) or not g.get("count")
    for case, r in rows:
        print(f"{case}: {json.dumps(r)}", file=sys.stderr)
    sys.exit(1 if failed else 0)


main()

#!/usr/bin/env python3
"""LL-HLS viewers on one stream (scripts/bench.sh blocking [VIEWERS] [SECONDS]).

One 720p30 passthrough stream (a pre-encoded file sent with `ffmpeg -re -c copy`, so the
publisher costs almost nothing) through a release build of livegate. VIEWERS threads (default
200) each behave like hls.js in low-latency mode: a blocking reload for the hinted part
(`?_HLS_msn=M&_HLS_part=N`), then that part, again and again, for SECONDS (default 30). The same
stream is first measured with no viewer for the same time, in the same run. Prints the server's
CPU-seconds per second and peak RSS for both, the viewers' request rate, how long a blocking
reload was held (median, p95), and errors.
"""
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/livegate")
VIEWERS = int(sys.argv[1]) if len(sys.argv) > 1 else 200
SECS = int(sys.argv[2]) if len(sys.argv) > 2 else 30
HZ = os.sysconf("SC_CLK_TCK")
HINT = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="[^"]*-(\d+)\.(\d+)\.m4s"')


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def rss_mb(pid, key="VmRSS"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return 0.0


def get(url):
    with urllib.request.urlopen(url, timeout=15) as r:
        return r.read()


def viewer(base, stop, stats):
    """A low-latency hls.js: block for the hinted part, fetch it, repeat."""
    playlist = f"{base}/live/bench/source/index.m3u8"
    try:
        hint = HINT.search(get(playlist).decode())
        while not stop.is_set() and hint:
            msn, part = hint.groups()
            asked = time.monotonic()
            text = get(f"{playlist}?_HLS_msn={msn}&_HLS_part={part}").decode()
            held = time.monotonic() - asked
            uri = re.search(rf'URI="([^"]*-{msn}\.{part}\.m4s)"', text)
            if uri:
                get(f"{base}/live/bench/source/{uri.group(1)}")
            with stats["lock"]:
                stats["held"].append(held)
                stats["requests"] += 2 if uri else 1
            hint = HINT.search(text)
    except OSError as e:
        with stats["lock"]:
            stats["errors"].append(str(e))


def main():
    work = tempfile.mkdtemp(prefix="livegate-bench-blocking.")
    procs = []
    try:
        src = os.path.join(work, "src.flv")
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
             "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i", "sine=sample_rate=48000",
             "-t", "20", "-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-b:v", "3000k",
             "-c:a", "aac", "-f", "flv", src], check=True)
        http, rtmp = free_port(), free_port()
        env = dict(os.environ, LIVEGATE_DATA_DIR=os.path.join(work, "data"), LIVEGATE_LOG="warn",
                   LIVEGATE_HTTP_LISTEN=f"127.0.0.1:{http}",
                   LIVEGATE_RTMP_LISTEN=f"127.0.0.1:{rtmp}", LIVEGATE_TRANSCODE_ENABLED="false",
                   LIVEGATE_WHIP_ENABLED="false", LIVEGATE_RECORD_ENABLED="false",
                   LIVEGATE_HTTP_MAX_CONNECTIONS_PER_IP=str(VIEWERS * 2 + 50))
        key = subprocess.run([BIN, "keys", "add", "bench"], env=env, capture_output=True,
                             text=True, check=True).stdout.strip().splitlines()[-1]
        server = subprocess.Popen([BIN, "serve"], env=env, stderr=open(f"{work}/server.log", "w"))
        procs.append(server)
        base = f"http://127.0.0.1:{http}"
        for _ in range(100):
            try:
                get(base + "/healthz")
                break
            except OSError:
                time.sleep(0.1)
        procs.append(subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", src,
             "-c", "copy", "-f", "flv", f"rtmp://127.0.0.1:{rtmp}/live/{key}"],
            # Its errors name the URL, which holds the stream key.
            stderr=open(f"{work}/publisher.log", "w")))
        for _ in range(200):
            try:
                if HINT.search(get(f"{base}/live/bench/source/index.m3u8").decode()):
                    break
            except OSError:
                pass
            time.sleep(0.1)
        time.sleep(2)

        cpu0 = cpu_seconds(server.pid)
        time.sleep(SECS)
        idle_cpu = (cpu_seconds(server.pid) - cpu0) / SECS
        idle_rss = rss_mb(server.pid)

        stop = threading.Event()
        stats = {"lock": threading.Lock(), "held": [], "requests": 0, "errors": []}
        threads = [threading.Thread(target=viewer, args=(base, stop, stats), daemon=True)
                   for _ in range(VIEWERS)]
        for t in threads:
            t.start()
        time.sleep(3)  # every viewer in its loop
        with stats["lock"]:
            stats["held"].clear()
            stats["requests"] = 0
        cpu0 = cpu_seconds(server.pid)
        time.sleep(SECS)
        busy_cpu = (cpu_seconds(server.pid) - cpu0) / SECS
        with stats["lock"]:
            held = sorted(stats["held"])
            requests = stats["requests"]
            errors = list(stats["errors"])
        busy_rss = rss_mb(server.pid)
        peak_rss = rss_mb(server.pid, "VmHWM")
        stop.set()
        for t in threads:
            t.join(timeout=10)

        print(f"one 720p30 passthrough stream, {SECS} s each, release build, {os.cpu_count()} cores")
        print(f"  no viewer:          {idle_cpu:.3f} CPU-s per s, RSS {idle_rss:.0f} MB")
        print(f"  {VIEWERS} LL viewers:    {busy_cpu:.3f} CPU-s per s ({busy_cpu / max(idle_cpu, 1e-3):.1f}x), "
              f"RSS {busy_rss:.0f} MB (peak {peak_rss:.0f} MB)")
        print(f"  {requests / SECS:.0f} requests/s (blocking reloads + parts), "
              f"{len(held)} reloads held median {statistics.median(held) * 1000:.0f} ms, "
              f"p95 {held[int(0.95 * (len(held) - 1))] * 1000:.0f} ms; {len(errors)} errors "
              f"{errors[:3]}")
    finally:
        for p in reversed(procs):  # the publisher first
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Load: PUBLISHERS streams and VIEWERS hls.js-like viewers on one node, beside nginx serving the
same segment bytes from disk (scripts/bench.sh load [PUBLISHERS] [VIEWERS] [SECONDS] [MODE]).

Publishers loop a pre-encoded 720p30 H.264/AAC file with `ffmpeg -re -stream_loop -1 -c copy`
(almost no CPU). MODE `passthrough` (default) serves them as published; MODE `ladder` runs the
default ladder on each (an OBS-like source: High, 2 B-frames, 3000 kbit/s, keyframes every 2 s,
so the source is the 720p rung), the viewers use LL-HLS (blocking reloads, every part), and the
ladders' dropped frames are reported. Viewers are examples/load (Rust, one keep-alive connection each, joining over
20 s): master, playlist every target duration, every new segment, 5% switching. Reports the
viewers' latency per request kind (p50/p99), errors, Mbit/s, and the server's CPU, RSS, threads
and fds over time (warm-up vs end). Then, in the same run: wrk on one segment from livegate and
the same bytes from nginx's disk (static), requests/s and the ratio.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

PUBLISHERS = int(sys.argv[1]) if len(sys.argv) > 1 else 100
VIEWERS = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
SECS = int(sys.argv[3]) if len(sys.argv) > 3 else 60
MODE = sys.argv[4] if len(sys.argv) > 4 else "passthrough"
if MODE not in ("passthrough", "ladder"):
    sys.exit(f"MODE is passthrough or ladder, not {MODE!r}")
LADDER = MODE == "ladder"
BIN = "target/release/livegate"
LOAD = "target/release/examples/load"
ADMIN = "bench-admin"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def wrk(url, secs):
    out = subprocess.run(["wrk", "-t1", "-c64", f"-d{secs}s", url],
                         capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rate, int(errors.group(1)) if errors else 0


def main():
    work = tempfile.mkdtemp(prefix="livegate-bench-load.")
    procs = []
    try:
        clip = f"{work}/src.flv"
        video = (["-profile:v", "high", "-pix_fmt", "yuv420p", "-b:v", "3000k", "-maxrate",
                  "3000k", "-bufsize", "6000k", "-x264-params",
                  "bframes=2:keyint=60:min-keyint=60:scenecut=0"] if LADDER
                 else ["-b:v", "2500k", "-g", "60"])
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                        "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i",
                        "sine=frequency=440:sample_rate=48000", "-t", "20", "-c:v", "libx264",
                        "-preset", "veryfast", *video, "-c:a", "aac", "-f", "flv", clip],
                       check=True)
        http, rtmp = free_port(), free_port()
        env = dict(os.environ, LIVEGATE_DATA_DIR=f"{work}/data", LIVEGATE_LOG="warn",
                   LIVEGATE_RTMP_LISTEN=f"127.0.0.1:{rtmp}",
                   LIVEGATE_HTTP_LISTEN=f"127.0.0.1:{http}", LIVEGATE_HTTP_ADMIN_TOKEN=ADMIN,
                   LIVEGATE_TRANSCODE_ENABLED=str(LADDER).lower(), LIVEGATE_WHIP_ENABLED="false",
                   LIVEGATE_TRANSCODE_MAX_LADDERS=str(PUBLISHERS),
                   LIVEGATE_HTTP_PER_IP_EXEMPT="127.0.0.1",
                   LIVEGATE_HTTP_MAX_CONNECTIONS=str(VIEWERS + 1000),
                   LIVEGATE_RTMP_MAX_CONNECTIONS_PER_IP=str(PUBLISHERS + 10),
                   LIVEGATE_RTMP_MAX_UNAUTHENTICATED_PER_IP=str(PUBLISHERS + 10))
        server = subprocess.Popen([BIN, "serve"], env=env, stderr=open(f"{work}/server.log", "w"))
        procs.append(server)
        base = f"http://127.0.0.1:{http}"
        for _ in range(100):
            try:
                get(f"{base}/healthz")
                break
            except OSError:
                time.sleep(0.1)
        users = [f"p{i}" for i in range(PUBLISHERS)]
        for user in users:
            req = urllib.request.Request(f"{base}/api/v1/keys", method="POST",
                                         data=json.dumps({"user": user}).encode(),
                                         headers={"authorization": f"Bearer {ADMIN}",
                                                  "content-type": "application/json"})
            key = json.loads(urllib.request.urlopen(req).read())["key"]
            procs.append(subprocess.Popen(
                ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
                 "-stream_loop", "-1", "-i", clip, "-c", "copy", "-f", "flv",
                 f"rtmp://127.0.0.1:{rtmp}/live/{key}"]))
        time.sleep(8)
        run = subprocess.run([LOAD, "viewers", "--base", base, "--streams", ",".join(users),
                              "--viewers", str(VIEWERS), "--secs", str(SECS), "--ramp-secs", "20",
                              "--pid", str(server.pid), "--every", "10",
                              *(["--ll"] if LADDER else [])],
                             capture_output=True, text=True, check=True)
        r = json.loads(run.stdout.strip().splitlines()[-1])
        samples = [s["server"] for s in r["samples"] if s.get("server")]
        if LADDER:
            print(f"## Load: {PUBLISHERS} ladders (OBS-like 720p30 at 3 Mbit/s: source 720p + "
                  f"480p + 360p), {VIEWERS} LL-HLS viewers, {SECS} s after a 20 s ramp")
            req = urllib.request.Request(f"{base}/api/v1/streams",
                                         headers={"authorization": f"Bearer {ADMIN}"})
            streams = json.loads(urllib.request.urlopen(req).read())
            streams = streams.get("streams", streams) if isinstance(streams, dict) else streams
            for st in streams:
                t = st.get("transcode") or {}
                print(f"- {st.get('user', st.get('name'))}: dropped frames "
                      f"{t.get('dropped_frames')}, source rung "
                      f"{(t.get('source_rung') or {}).get('rung')}, speed {t.get('speed')}, capacity {t.get('capacity')}")
        else:
            print(f"## Load: {PUBLISHERS} passthrough publishers (720p30, 2.5 Mbit/s), {VIEWERS} "
                  f"viewers, {SECS} s after a 20 s ramp")
        print(f"requests {r['requests']}, errors {r['errors']} {r['summary']['errors']}, "
              f"{r['bytes'] * 8 / 1e9 / r['secs']:.2f} Gbit/s average")
        print("| kind | count | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|")
        for kind, k in r["summary"]["kinds"].items():
            print(f"| {kind} | {k['count']} | {k['p50_ms']:.1f} | {k['p99_ms']:.1f} | "
                  f"{k['max_ms']:.1f} |")
        print("| t (s) | req/s | Mbit/s | server CPU-s/s | RSS MiB | threads | fds |")
        print("|---|---|---|---|---|---|---|")
        for s in r["samples"]:
            v = s.get("server") or {}
            print(f"| {s['at_secs']:.0f} | {s['requests_per_sec']:.0f} | {s['mbit_per_sec']:.0f} "
                  f"| {v.get('cpu', 0):.2f} | {v.get('rss_mib', 0):.0f} | {v.get('threads', 0)} "
                  f"| {v.get('fds', 0)} |")
        if samples:
            print(f"RSS after the ramp {samples[min(2, len(samples) - 1)]['rss_mib']:.0f} MiB, "
                  f"at the end {samples[-1]['rss_mib']:.0f} MiB, peak "
                  f"{max(s['rss_mib'] for s in samples):.0f} MiB")

        # The same segment bytes from livegate and from nginx's disk, same run.
        master = get(f"{base}/live/p0/index.m3u8").decode()
        rung = [l for l in master.splitlines() if l and not l.startswith("#")][-1]
        rung_url = f"{base}/live/p0/{rung}".rsplit("/", 1)[0]
        playlist = get(f"{rung_url}/index.m3u8").decode()
        seg = [l for l in playlist.splitlines() if l and not l.startswith("#")][-2]
        seg_url = f"{rung_url}/{seg}"
        body = get(seg_url)
        os.makedirs(f"{work}/www", exist_ok=True)
        open(f"{work}/www/seg.m4s", "wb").write(body)
        nginx_port = free_port()
        open(f"{work}/nginx.conf", "w").write(
            f"user root; daemon on; worker_processes auto; pid {work}/nginx.pid; error_log {work}/error.log;\n"
            f"events {{ worker_connections 4096; }}\nhttp {{ access_log off; sendfile on;\n"
            f"server {{ listen 127.0.0.1:{nginx_port}; root {work}/www; }} }}\n")
        subprocess.run(["nginx", "-p", work, "-c", f"{work}/nginx.conf"], check=True)
        try:
            lg, lg_err = wrk(seg_url, 10)
            ng, ng_err = wrk(f"http://127.0.0.1:{nginx_port}/seg.m4s", 10)
        finally:
            subprocess.run(["nginx", "-p", work, "-c", f"{work}/nginx.conf", "-s", "stop"])
        print(f"\n## One {len(body) // 1024} KiB segment, wrk -t1 -c64 10 s, with the "
              f"{PUBLISHERS} publishers still live")
        print(f"livegate {lg:.0f} req/s ({lg_err} errors), nginx static {ng:.0f} req/s "
              f"({ng_err} errors): ratio {lg / ng:.2f}")
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

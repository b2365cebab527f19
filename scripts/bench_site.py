#!/usr/bin/env python3
"""What the site features cost, on a release build (scripts/bench.sh site [SECONDS]).

1. Playback token check: wrk on one small file (the init segment) of a public stream reached
   through its session path and of a token stream through a token path, same server, same run:
   requests/s and server CPU-microseconds per request; the difference is what checking the token
   costs.
2. Thumbnails: four 720p30 streams served as published, thumbnails every 5 s against none
   (two server runs): server CPU-s per second, the difference per stream.
3. Chat fan-out: 500 WebSocket connections to one room on one node (examples/load, Rust), the
   site posting events over the admin API at 20, 100 and 400 a second: entries delivered per
   second and their share of those expected, delivery latency p50/p99, server CPU.
"""
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

SECS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
BIN = os.environ.get("LIVEGATE_BIN", "target/release/livegate")
LOAD = "target/release/examples/load"
ADMIN = "bench-admin-token"
SECRET = "bench-secret-bench-secret-bench-secret"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


TICK = os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(self, work, env):
        self.http = free_port()
        self.rtmp = free_port()
        # livegate refuses LIVEGATE_* variables it does not know: LIVEGATE_BIN is this script's.
        inherited = {k: v for k, v in os.environ.items() if k != "LIVEGATE_BIN"}
        self.env = dict(inherited, LIVEGATE_DATA_DIR=f"{work}/data-{self.http}", LIVEGATE_LOG="warn",
                        LIVEGATE_RTMP_LISTEN=f"127.0.0.1:{self.rtmp}",
                        LIVEGATE_HTTP_LISTEN=f"127.0.0.1:{self.http}",
                        LIVEGATE_HTTP_ADMIN_TOKEN=ADMIN, LIVEGATE_ACCESS_TOKEN_SECRET=SECRET,
                        LIVEGATE_WHIP_ENABLED="false", LIVEGATE_RECORD_ENABLED="false",
                        LIVEGATE_TRANSCODE_ENABLED="false", **env)
        self.proc = subprocess.Popen([BIN, "serve"], env=self.env,
                                     stderr=open(f"{work}/server.log", "a"))
        self.publishers = []
        for _ in range(100):
            try:
                self.get("/healthz")
                break
            except OSError:
                time.sleep(0.1)

    def url(self, path):
        return f"http://127.0.0.1:{self.http}{path}"

    def get(self, path):
        return urllib.request.urlopen(self.url(path), timeout=10).read()

    def api(self, method, path, body=None):
        req = urllib.request.Request(self.url(path), method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"authorization": f"Bearer {ADMIN}",
                                              "content-type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=10).read() or b"null")

    def key(self, user):
        out = subprocess.run([BIN, "keys", "add", user], env=self.env, capture_output=True,
                             text=True, check=True)
        return out.stdout.strip().splitlines()[-1]

    def publish(self, user, clip):
        key = self.key(user)
        self.publishers.append(subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop",
             "-1", "-i", clip, "-c", "copy", "-f", "flv",
             f"rtmp://127.0.0.1:{self.rtmp}/live/{key}"]))

    def wait_master(self, user, query=""):
        for _ in range(200):
            try:
                return self.get(f"/live/{user}/index.m3u8{query}").decode()
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"{user} never went live")

    def cpu(self):
        return cpu_ticks(self.proc.pid) / TICK

    def stop(self):
        for p in self.publishers:
            p.kill()
        self.proc.terminate()
        self.proc.wait(timeout=15)


def clip(work):
    path = f"{work}/src.flv"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=48000", "-t", "20", "-c:v", "libx264",
                    "-preset", "veryfast", "-pix_fmt", "yuv420p", "-x264-params",
                    "keyint=60:min-keyint=60:scenecut=0", "-b:v", "3000k", "-c:a", "aac",
                    "-f", "flv", path], check=True)
    return path


def wrk(server, url):
    before = server.cpu()
    out = subprocess.run(["wrk", "-t1", "-c32", f"-d{SECS}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    cpu = server.cpu() - before
    total = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, cpu / total * 1e6, int(errors.group(1)) if errors else 0


def token_cost(work, source):
    s = Server(work, {})
    try:
        s.publish("pub", source)
        s.publish("tok", source)
        s.api("PUT", "/api/v1/access/tok", {"mode": "token"})
        pub_master = s.wait_master("pub")
        token = s.api("POST", "/api/v1/streams/tok/tokens", {"ttl_secs": 3600})["token"]
        s.wait_master("tok", f"?token={token}")
        session = re.search(r"^(s/[0-9a-f]+/)", pub_master, re.M).group(1)
        time.sleep(3)
        init = lambda user, prefix: re.search(r'URI="([^"]+\.mp4)"', s.get(
            f"/live/{user}/{prefix}source/index.m3u8").decode()).group(1)
        pub_url = s.url(f"/live/pub/{session}source/{init('pub', session)}")
        tok_url = s.url(f"/live/tok/t/{token}/source/{init('tok', f't/{token}/')}")
        rows = []
        for name, url in [("public (session path)", pub_url), ("token", tok_url),
                          ("public (session path), again", pub_url)]:
            rows.append((name, *wrk(s, url)))
        print("\n## Playback token check (wrk -t1 -c32, init segment, %d s each)" % SECS)
        print("| path | req/s | server CPU-µs/request | non-2xx |")
        print("|---|---|---|---|")
        for name, rps, us, errors in rows:
            print(f"| {name} | {rps:.0f} | {us:.1f} | {errors} |")
        public = statistics.mean([rows[0][2], rows[2][2]])
        print(f"token check: {rows[1][2] - public:+.1f} CPU-µs per request "
              f"({rows[1][2] / public:.2f}× the public request's CPU; req/s ratio "
              f"{rows[1][1] / statistics.mean([rows[0][1], rows[2][1]]):.2f})")
    finally:
        s.stop()


def thumbnail_cost(work, source):
    results = {}
    for interval in ("5", "0"):
        s = Server(work, {"LIVEGATE_TRANSCODE_THUMBNAIL_INTERVAL_SECS": interval})
        try:
            for i in range(4):
                s.publish(f"t{i}", source)
            for i in range(4):
                s.wait_master(f"t{i}")
            time.sleep(5)
            before, t0 = s.cpu(), time.time()
            time.sleep(max(SECS * 2, 20))
            results[interval] = (s.cpu() - before) / (time.time() - t0)
            if interval == "5":
                jpeg = s.get("/live/t0/thumb.jpg")
                results["jpeg_bytes"] = len(jpeg)
        finally:
            s.stop()
    per_stream = (results["5"] - results["0"]) / 4
    print("\n## Thumbnails (4 × 720p30 passthrough streams, %d s)" % max(SECS * 2, 20))
    print(f"server CPU-s/s: thumbnails every 5 s {results['5']:.4f}, none {results['0']:.4f}; "
          f"per stream {per_stream * 1000:.2f} CPU-ms/s ({per_stream * 5 * 1000:.0f} CPU-ms per "
          f"thumbnail); JPEG {results['jpeg_bytes']} bytes")


def chat_fanout(work):
    s = Server(work, {"LIVEGATE_HTTP_PER_IP_EXEMPT": "127.0.0.1"})
    try:
        print("\n## Chat fan-out (500 WebSocket connections, one room, one node; "
              "clients: examples/load, on the same 2 cores)")
        print("| events/s posted | entries delivered/s | of expected | latency p50 / p99 ms "
              "| server CPU-s/s | CPU-µs per entry | connection ends |")
        print("|---|---|---|---|---|---|---|")
        for rate in (20, 100, 400):
            out = subprocess.run(
                [LOAD, "chat", "--base", f"http://127.0.0.1:{s.http}", "--room", f"r{rate}",
                 "--connections", "500", "--rate", str(rate), "--secs", str(SECS),
                 "--admin", ADMIN, "--pid", str(s.proc.pid)],
                check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            share = r["entries_delivered"] / max(r["entries_expected"], 1)
            print(f"| {r['post_rate']:.0f} | {r['delivered_per_sec']:.0f} | {share:.3f} | "
                  f"{r['latency_p50_ms']:.1f} / {r['latency_p99_ms']:.1f} | "
                  f"{r['server_cpu']:.3f} | {r['server_cpu_us_per_entry']:.2f} | {r['ends']} |")
    finally:
        s.stop()


def main():
    with tempfile.TemporaryDirectory(prefix="livegate-bench-site-") as work:
        source = clip(work)
        token_cost(work, source)
        thumbnail_cost(work, source)
        chat_fanout(work)


if __name__ == "__main__":
    main()

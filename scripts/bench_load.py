#!/usr/bin/env python3
"""Load: PUBLISHERS streams and VIEWERS hls.js-like viewers on one node, beside nginx serving the
same segment bytes from disk (scripts/bench.sh load [PUBLISHERS] [VIEWERS] [SECONDS] [MODE]).

Publishers loop a pre-encoded H.264/AAC file in real time, all from one process (`examples/load
publishers`, like `ffmpeg -re -stream_loop -1 -c copy` each, at almost no CPU). MODE `passthrough` (default) serves them as published; MODE `ladder` runs the
default ladder on each (an OBS-like source: High, 2 B-frames, 3000 kbit/s, keyframes every 2 s,
so the source is the 720p rung), the viewers use LL-HLS (blocking reloads, every part), and the
ladders' dropped frames are reported. Viewers are examples/load (Rust, one keep-alive connection each, joining over
20 s): master, playlist every target duration, every new segment, 5% switching. Reports the
viewers' latency per request kind (p50/p99) and per 5 s interval, errors, Mbit/s, the server's
CPU, RSS, threads and fds over time (warm-up vs end), a probe viewer outside the generator, and
the kernel's TCP counters and peak socket memory. Then, in the same run: wrk on the newest segment from livegate
and the same bytes from nginx's disk (static; as shipped and tuned for large files), alternating
rounds: requests/s, server CPU-µs per request and livegate's ratio to each.
"""
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

PUBLISHERS = int(sys.argv[1]) if len(sys.argv) > 1 else 100
VIEWERS = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
SECS = int(sys.argv[3]) if len(sys.argv) > 3 else 60
MODE = sys.argv[4] if len(sys.argv) > 4 else "passthrough"
if MODE not in ("passthrough", "ladder"):
    sys.exit(f"MODE is passthrough or ladder, not {MODE!r}")
LADDER = MODE == "ladder"
# The passthrough clip's video bitrate: the egress is viewers × this, and 10,000 viewers of
# 2.5 Mbit/s (25 Gbit/s) is more than one machine's loopback carries for any server, so the
# connection and request scale is measured with a smaller picture.
KBITS = int(sys.argv[5]) if len(sys.argv) > 5 else 2500
SIZE = "1280x720" if KBITS >= 1500 else "640x360"
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
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rate, total, int(errors.group(1)) if errors else 0


def cpu_secs(pids):
    """User + system CPU seconds of these processes so far."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def nginx_workers(master):
    workers = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == master:
                        workers.append(int(entry))
            except OSError:
                pass
    return workers


# nginx as shipped (Debian's default: sendfile on) and tuned for large static files (the best of
# the settings tried on this machine kind: sendfile without a chunk limit, tcp_nopush).
NGINX_CONFIGS = {
    "nginx static (sendfile)": "sendfile on;",
    "nginx static (tuned)": "sendfile on; tcp_nopush on; sendfile_max_chunk 0;",
}
ROUNDS = 3
ROUND_SECS = 5
BASELINE_SECS = 2


def segment_vs_nginx(rung_url, server_pid, work):
    """The newest segment from livegate and the same bytes from nginx's disk, alternating in
    ROUNDS rounds (a new segment each round, so it stays in the live window): requests/s and
    server CPU-µs per request, medians, and livegate's ratio to each."""
    os.makedirs(f"{work}/www", exist_ok=True)
    servers = {}
    for name, settings in NGINX_CONFIGS.items():
        port, prefix = free_port(), f"{work}/nginx{len(servers)}"
        os.makedirs(prefix, exist_ok=True)
        with open(f"{prefix}/nginx.conf", "w") as f:
            f.write(f"user root; daemon on; worker_processes auto; pid {prefix}/nginx.pid; "
                    f"error_log {prefix}/error.log;\nevents {{ worker_connections 4096; }}\n"
                    f"http {{ access_log off; {settings}\n"
                    f"server {{ listen 127.0.0.1:{port}; root {work}/www; }} }}\n")
        subprocess.run(["nginx", "-p", prefix, "-c", f"{prefix}/nginx.conf"], check=True)
        servers[name] = (port, prefix)
    results = {"livegate": []}
    results.update({name: [] for name in servers})
    size = 0
    try:
        time.sleep(0.5)
        for _ in range(ROUNDS):
            playlist = get(f"{rung_url}/index.m3u8").decode()
            seg = [l for l in playlist.splitlines() if l and not l.startswith("#")][-1]
            body = get(f"{rung_url}/{seg}")
            size = len(body)
            with open(f"{work}/www/seg.m4s", "wb") as f:
                f.write(body)
            targets = [("livegate", f"{rung_url}/{seg}", [server_pid])]
            for name, (port, prefix) in servers.items():
                with open(f"{prefix}/nginx.pid") as f:
                    master = int(f.read())
                targets.append((name, f"http://127.0.0.1:{port}/seg.m4s", nginx_workers(master)))
            for name, url, pids in targets:
                # What the server spends without wrk (ingest, ladders) is not the requests'.
                before, start = cpu_secs(pids), time.time()
                time.sleep(BASELINE_SECS)
                background = (cpu_secs(pids) - before) / (time.time() - start)
                before, start = cpu_secs(pids), time.time()
                rate, total, errors = wrk(url, ROUND_SECS)
                spent = cpu_secs(pids) - before - background * (time.time() - start)
                cpu_us = max(spent, 0) * 1e6 / max(total, 1)
                results[name].append((rate, cpu_us, errors))
    finally:
        for port, prefix in servers.values():
            subprocess.run(["nginx", "-p", prefix, "-c", f"{prefix}/nginx.conf", "-s", "stop"])
    print(f"\n## The newest segment (~{size // 1024} KiB), wrk -t1 -c64, {ROUNDS} rounds of "
          f"{ROUND_SECS} s each, alternating, with the publishers still live (medians)")
    print("| server | req/s | server CPU-µs per request (beyond its background) | errors | "
          "livegate req/s ratio |")
    print("|---|---|---|---|---|")
    median = statistics.median
    ours = median(r[0] for r in results["livegate"])
    for name, rounds in results.items():
        rate = median(r[0] for r in rounds)
        # Beside ladders, their CPU swings more than the requests cost: no figure.
        cpu = "n/a" if LADDER and name == "livegate" else f"{median(r[1] for r in rounds):.0f}"
        print(f"| {name} | {rate:.0f} | {cpu} | "
              f"{sum(r[2] for r in rounds)} | {ours / rate:.2f} |")


class Probe(threading.Thread):
    """One more viewer, outside the generator: the newest segment and its playlist of one
    stream, one request each every 50 ms on one keep-alive connection, once every generated
    viewer has joined. Tells the server's answer time from the generator's own scheduling (its
    10,000 connections share the cores with the server)."""

    def __init__(self, base, stream, start_after, secs):
        super().__init__(daemon=True)
        self.base, self.stream, self.start_after, self.secs = base, stream, start_after, secs
        self.latencies, self.errors = [], 0

    def run(self):
        host, port = self.base.removeprefix("http://").split(":")
        # The rung before the load starts: an overloaded server must not end the probe.
        master = get(f"{self.base}/live/{self.stream}/index.m3u8").decode()
        rung = [l for l in master.splitlines() if l and not l.startswith("#")][-1]
        playlist = f"/live/{self.stream}/{rung}"
        time.sleep(self.start_after)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        directory = playlist.rsplit("/", 1)[0]
        end = time.time() + self.secs
        while time.time() < end:
            try:
                asked = time.time()
                conn.request("GET", playlist)
                response = conn.getresponse()
                text = response.read().decode()
                self.latencies.append(time.time() - asked)
                newest = [l for l in text.splitlines() if l and not l.startswith("#")][-1]
                asked = time.time()
                conn.request("GET", f"{directory}/{newest}")
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    self.errors += 1
                self.latencies.append(time.time() - asked)
            except (OSError, http.client.HTTPException, IndexError):
                self.errors += 1
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
            time.sleep(0.05)

    def report(self):
        v = sorted(self.latencies)
        if not v:
            return "probe: no answer"
        at = lambda q: v[min(len(v) - 1, round(q * (len(v) - 1)))] * 1000
        return (f"probe (one more viewer outside the generator, after the ramp): {len(v)} requests, "
                f"{self.errors} errors, p50 {at(0.5):.1f} ms, p99 {at(0.99):.1f} ms, "
                f"max {v[-1] * 1000:.1f} ms")


def tcp_counters():
    """The kernel's TCP counters (nstat, iproute2) that tell a congested loopback: zero windows,
    window probes, loss probes, listen-queue overflows."""
    try:
        out = subprocess.run(["nstat", "-az"], capture_output=True, text=True).stdout
    except OSError:
        return {}
    wanted = ("TcpExtTCPToZeroWindowAdv", "TcpExtTCPWinProbe", "TcpExtTCPLossProbes",
              "TcpExtListenOverflows", "TcpRetransSegs",
              # Socket memory over net.ipv4.tcp_mem: the kernel prunes and drops received data.
              "TcpExtTCPMemoryPressures", "TcpExtTCPMemoryPressuresChrono", "TcpExtPruneCalled",
              "TcpExtTCPRcvQDrop")
    return {f[0]: int(f[1]) for f in (l.split() for l in out.splitlines())
            if len(f) > 1 and f[0] in wanted}


class SocketMemory(threading.Thread):
    """Peak TCP socket memory (/proc/net/sockstat, pages) against net.ipv4.tcp_mem's pressure
    threshold: with both ends on one host every byte in flight is charged twice."""

    def __init__(self, secs):
        super().__init__(daemon=True)
        self.until = time.monotonic() + secs
        self.peak = 0

    def run(self):
        while time.monotonic() < self.until:
            try:
                with open("/proc/net/sockstat") as f:
                    m = re.search(r"^TCP:.* mem (\d+)", f.read(), re.M)
                self.peak = max(self.peak, int(m.group(1)) if m else 0)
            except OSError:
                return
            time.sleep(0.25)

    def report(self):
        try:
            with open("/proc/sys/net/ipv4/tcp_mem") as f:
                low, pressure, high = (int(v) for v in f.read().split())
        except (OSError, ValueError):
            return f"TCP socket memory peak {self.peak * 4 // 1024} MiB"
        mib = lambda pages: pages * 4 // 1024
        return (f"TCP socket memory peak {mib(self.peak)} MiB; net.ipv4.tcp_mem: pressure from "
                f"{mib(pressure)} MiB, limit {mib(high)} MiB")


def main():
    work = tempfile.mkdtemp(prefix="livegate-bench-load.")
    procs = []
    try:
        clip = f"{work}/src.flv"
        video = (["-profile:v", "high", "-pix_fmt", "yuv420p", "-b:v", "3000k", "-maxrate",
                  "3000k", "-bufsize", "6000k", "-x264-params",
                  "bframes=2:keyint=60:min-keyint=60:scenecut=0"] if LADDER
                 else ["-b:v", f"{KBITS}k", "-maxrate", f"{KBITS}k", "-bufsize", f"{2 * KBITS}k",
                       "-g", "60"])
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                        f"testsrc2=size={'1280x720' if LADDER else SIZE}:rate=30", "-f", "lavfi", "-i",
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
        keys = []
        for user in users:
            req = urllib.request.Request(f"{base}/api/v1/keys", method="POST",
                                         data=json.dumps({"user": user}).encode(),
                                         headers={"authorization": f"Bearer {ADMIN}",
                                                  "content-type": "application/json"})
            keys.append(json.loads(urllib.request.urlopen(req).read())["key"])
        # One process for every publisher (a hundred ffmpeg processes took a quarter of the 2
        # cores from the server and the viewers).
        procs.append(subprocess.Popen([LOAD, "publishers", "--file", clip, "--rtmp",
                                       f"rtmp://127.0.0.1:{rtmp}/live/", "--keys", ",".join(keys)],
                                      stdout=subprocess.DEVNULL))
        time.sleep(8)
        streams = json.loads(urllib.request.urlopen(urllib.request.Request(
            f"{base}/api/v1/streams", headers={"authorization": f"Bearer {ADMIN}"})).read())
        if len(streams) != PUBLISHERS:
            sys.exit(f"{len(streams)} of {PUBLISHERS} publishers are live; see {work}/server.log")
        probe = Probe(base, users[0], 20, max(SECS - 5, 1))
        probe.start()
        socket_memory = SocketMemory(20 + SECS)
        socket_memory.start()
        counters = tcp_counters()
        run = subprocess.run([LOAD, "viewers", "--base", base, "--streams", ",".join(users),
                              "--viewers", str(VIEWERS), "--secs", str(SECS), "--ramp-secs", "20",
                              "--pid", str(server.pid), "--every", "5",
                              *(["--ll"] if LADDER else [])],
                             capture_output=True, text=True, check=True)
        r = json.loads(run.stdout.strip().splitlines()[-1])
        counters = {k: v - counters.get(k, 0) for k, v in tcp_counters().items()}
        probe.join()
        samples = [s["server"] for s in r["samples"] if s.get("server")]
        # From 10 s after the last viewer joined (the 20 s ramp).
        warm = [s["server"] for s in r["samples"] if s.get("server") and s["at_secs"] >= 30]
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
            print(f"## Load: {PUBLISHERS} passthrough publishers ({SIZE} at 30 fps, {KBITS} kbit/s "
                  f"video), {VIEWERS} "
                  f"viewers, {SECS} s after a 20 s ramp")
        print(f"requests {r['requests']}, errors {r['errors']} {r['summary']['errors']}, "
              f"{r['bytes'] * 8 / 1e9 / r['secs']:.2f} Gbit/s average")
        print("| kind | count | p50 ms | p99 ms | max ms | after the ramp: count | p50 ms | "
              "p99 ms | max ms |\n|---|---|---|---|---|---|---|---|---|")
        steady = r["summary"]["steady_kinds"]
        for kind, k in r["summary"]["kinds"].items():
            s = steady.get(kind, {"count": 0, "p50_ms": 0, "p99_ms": 0, "max_ms": 0})
            print(f"| {kind} | {k['count']} | {k['p50_ms']:.1f} | {k['p99_ms']:.1f} | "
                  f"{k['max_ms']:.1f} | {s['count']} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | "
                  f"{s['max_ms']:.1f} |")
        # Latency by the interval a request was asked in, beside the server's state then.
        windows = {w["window"]: w for w in r["summary"]["windows"]}
        print("| t (s) | req/s | Mbit/s | p50 / p99 / max ms (asked in the interval) | "
              "server CPU-s/s | RSS MiB | threads | fds |")
        print("|---|---|---|---|---|---|---|---|")
        for i, s in enumerate(r["samples"]):
            v = s.get("server") or {}
            w = windows.get(i, {"p50_ms": 0, "p99_ms": 0, "max_ms": 0})
            print(f"| {s['at_secs']:.0f} | {s['requests_per_sec']:.0f} | {s['mbit_per_sec']:.0f} "
                  f"| {w['p50_ms']:.1f} / {w['p99_ms']:.1f} / {w['max_ms']:.0f} "
                  f"| {v.get('cpu', 0):.2f} | {v.get('rss_mib', 0):.0f} | {v.get('threads', 0)} "
                  f"| {v.get('fds', 0)} |")
        print(probe.report())
        print(socket_memory.report())
        print("kernel TCP counters over the run: "
              + (", ".join(f"{k} {v}" for k, v in counters.items()) or "nstat not available"))
        metrics = get(f"{base}/metrics").decode()
        closed = re.findall(r'^livegate_http_connections_(refused|timed_out)_total\{reason="([a-z_]+)"\} ([0-9]+)',
                            metrics, re.M)
        opened = sum(int(v) for v in re.findall(r'^livegate_http_connections_total\{[^}]*\} ([0-9]+)',
                                               metrics, re.M))
        print(f"HTTP connections opened {opened}; closed by the server: "
              + (", ".join(f"{what} {reason} {n}" for what, reason, n in closed) or "none"))
        if samples and warm:
            print(f"RSS 10 s after the ramp {warm[0]['rss_mib']:.0f} MiB, "
                  f"at the end {samples[-1]['rss_mib']:.0f} MiB, peak "
                  f"{max(s['rss_mib'] for s in samples):.0f} MiB")

        # The same segment bytes from livegate and from nginx's disk, same run.
        master = get(f"{base}/live/p0/index.m3u8").decode()
        rung = [l for l in master.splitlines() if l and not l.startswith("#")][-1]
        segment_vs_nginx(f"{base}/live/p0/{rung}".rsplit("/", 1)[0], server.pid, work)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""What HTTPS costs beside plain HTTP, same server, same run (scripts/bench.sh https [SECONDS]).

One 720p30 stream served as published. h2load fetches the same files over plain HTTP/1.1, HTTPS
with HTTP/1.1 and HTTPS with HTTP/2 (one and ten streams per connection), 32 connections each
(opened once, so the handshakes are amortized; a row of fresh connections per request shows the
handshake itself): requests/s, MB/s, and server CPU-microseconds per request; the ratio to plain
HTTP is the overhead. The certificate is a self-signed P-256 one made with openssl.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from bench_site import Server, clip, free_port

SECS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
CONNECTIONS = 32


def h2load(server, url, extra):
    before = server.cpu()
    out = subprocess.run(["h2load", "-D", str(SECS), "-c", str(CONNECTIONS), *extra, url],
                         capture_output=True, text=True).stdout
    cpu = server.cpu() - before
    done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, "
                     r"(\d+) failed, (\d+) errored", out)
    rate = re.search(r"finished in [\d.]+s, ([\d.]+) req/s, ([\d.]+)([KMG]?B)/s", out)
    if not done or not rate:
        raise SystemExit(f"h2load {url}: unexpected output\n{out}")
    succeeded = int(done.group(3))
    scale = {"B": 1e-6, "KB": 1e-3, "MB": 1.0, "GB": 1e3}[rate.group(3)]
    return (float(rate.group(1)), float(rate.group(2)) * scale,
            cpu / max(succeeded, 1) * 1e6, int(done.group(4)) + int(done.group(5)))


def main():
    if not shutil.which("h2load"):
        raise SystemExit("bench https needs h2load: apt-get install nghttp2-client")
    work = tempfile.mkdtemp(prefix="livegate-bench-https.")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{work}/key.pem", "-out",
                    f"{work}/cert.pem", "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True,
                   capture_output=True)
    https = free_port()
    source = clip(work)
    s = Server(work, {"LIVEGATE_HTTP_TLS_LISTEN": f"127.0.0.1:{https}",
                      "LIVEGATE_HTTP_TLS_CERT": f"{work}/cert.pem",
                      "LIVEGATE_HTTP_TLS_KEY": f"{work}/key.pem",
                      "LIVEGATE_HTTP_PER_IP_EXEMPT": "127.0.0.1"})
    try:
        s.publish("bench", source)
        master = s.wait_master("bench")
        session = re.search(r"^(s/[0-9a-f]+/)", master, re.M).group(1)
        media = f"/live/bench/{session}source/index.m3u8"
        def newest_segment():
            # The newest segment stays in the live window for the whole row (window × 2 s).
            for _ in range(100):
                found = re.findall(r"^(\S+\.m4s)$", s.get(media).decode(), re.M)
                if len(found) >= 2:
                    return f"/live/bench/{session}source/{found[-1]}"
                time.sleep(0.2)
            raise SystemExit("no segments")

        size = len(s.get(newest_segment()))
        files = [("segment (%d KiB)" % (size // 1024), newest_segment), ("media playlist", lambda: media)]
        ways = [("HTTP/1.1", "http", ["--h1"]),
                ("HTTPS HTTP/1.1", "https", ["--h1"]),
                ("HTTPS HTTP/2, 1 stream/conn", "https", ["-m", "1"]),
                ("HTTPS HTTP/2, 10 streams/conn", "https", ["-m", "10"])]
        print(f"\n## HTTPS beside HTTP (h2load -c {CONNECTIONS}, {SECS} s each, one server)")
        print("| file | protocol | req/s | MB/s | server CPU-µs/request | × HTTP CPU | failed |")
        print("|---|---|---|---|---|---|---|")
        for name, path in files:
            plain = None
            for label, scheme, extra in ways:
                port = s.http if scheme == "http" else https
                rps, mbs, us, failed = h2load(s, f"{scheme}://127.0.0.1:{port}{path()}", extra)
                plain = plain or us
                print(f"| {name} | {label} | {rps:.0f} | {mbs:.0f} | {us:.1f} | "
                      f"{us / plain:.2f} | {failed} |")
        # A handshake per request: 500 clients, one request each.
        for label, scheme, port in [("HTTP/1.1", "http", s.http), ("HTTPS HTTP/2", "https", https)]:
            before = s.cpu()
            n = 500
            out = subprocess.run(["h2load", "-n", str(n), "-c", str(n), "-m", "1",
                                  *(["--h1"] if scheme == "http" else []),
                                  f"{scheme}://127.0.0.1:{port}{media}"],
                                 capture_output=True, text=True).stdout
            cpu = s.cpu() - before
            ok = re.search(r"(\d+) succeeded", out)
            print(f"new connection per request, {label}: {cpu / n * 1e6:.0f} server CPU-µs per "
                  f"connection+request ({ok.group(1) if ok else '?'} of {n} succeeded)")
    finally:
        s.stop()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    main()

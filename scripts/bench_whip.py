#!/usr/bin/env python3
"""WHIP benchmark (scripts/bench.sh whip [SECONDS]): run inside a loopback-only network
namespace by bench.sh. For a 640x480 VP8 and H.264 publish from headless Chromium's fake camera
(WHIP) and the same size over RTMP (ffmpeg testsrc2, H.264, pre-encoded, sent with -c copy),
each through the default ladder of a release build for SECONDS: time from the POST (WHIP) or
the first byte (RTMP) to the first master playlist; segment availability delay (the segment's
end on the server's media clock, PROGRAM-DATE-TIME + EXTINF, → the segment listed; playlist
polled every 20 ms); the server's CPU-seconds per media-second; for WHIP, Chromium's own
WebRTC stats (packets, loss, NACKs, PLIs it received)."""
import json, os, socket, statistics, subprocess, sys, tempfile, time, urllib.request
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/livegate")
SECS = int(sys.argv[1]) if len(sys.argv) > 1 else 30
HZ = os.sysconf("SC_CLK_TCK")


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except Exception:
        return 0, ""


def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / HZ


def run(case, work):
    http, rtmp, udp = free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    env = dict(os.environ, LIVEGATE_DATA_DIR=f"{work}/{case}", LIVEGATE_LOG="warn",
               LIVEGATE_HTTP_LISTEN=f"127.0.0.1:{http}", LIVEGATE_RTMP_LISTEN=f"127.0.0.1:{rtmp}",
               LIVEGATE_WHIP_UDP_LISTEN=f"127.0.0.1:{udp}", LIVEGATE_RECORD_ENABLED="false")
    key = subprocess.run([BIN, "keys", "add", "bench"], env=env, capture_output=True,
                         text=True, check=True).stdout.strip().splitlines()[-1]
    server = subprocess.Popen([BIN, "serve"], env=env, stderr=open(f"{work}/{case}.log", "w"))
    base = f"http://127.0.0.1:{http}"
    while get(base + "/healthz")[0] != 200:
        time.sleep(0.05)
    cpu0 = cpu(server.pid)
    start = time.time()
    if case == "rtmp-h264":
        pub = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i",
                                f"{work}/src.flv", "-c", "copy", "-f", "flv",
                                f"rtmp://127.0.0.1:{rtmp}/live/{key}"])
    else:
        codec = case.split("-")[1].upper()
        url = f"{base}/publish?key={key}&codec={codec}&auto=1&width=640&height=480"
        pub = subprocess.Popen(["node", os.path.join(ROOT, "tests/browser/publish.mjs"),
                                "--seconds", str(SECS), url], stdout=subprocess.PIPE, text=True)
    master_at = None
    seen = {}
    while pub.poll() is None:
        now = time.time()
        if master_at is None and get(base + "/live/bench/index.m3u8")[0] == 200:
            master_at = now
        if master_at is not None:
            status, text = get(base + "/live/bench/360p/index.m3u8")
            pdt = None
            for line in text.splitlines():
                if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
                    pdt = datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00")).timestamp()
                elif line.startswith("#EXTINF:") and pdt is not None:
                    dur = float(line[8:].split(",")[0])
                elif line and not line.startswith("#") and pdt is not None and line not in seen:
                    seen[line] = now - (pdt + dur)
        time.sleep(0.02)
    cpu1 = cpu(server.pid)
    report = None
    if case != "rtmp-h264":
        out = pub.stdout.read().strip().splitlines()
        report = json.loads(out[-1])[0] if out else None
        first = (master_at - report["postedAt"] / 1000) if report and master_at else None
    else:
        first = master_at - start if master_at else None
    server.terminate()
    server.wait()
    delays = sorted(d * 1000 for d in list(seen.values())[1:])  # the first was listed before polling
    media = SECS
    return {
        "case": case, "first_master_s": first,
        "delay_ms_median": statistics.median(delays) if delays else None,
        "delay_ms_max": max(delays) if delays else None, "segments": len(delays),
        "cpu_s_per_media_s": (cpu1 - cpu0) / media, "chromium": report and report.get("stats"),
        # Chromium's fake camera runs at its own rate (~20 fps); the RTMP source is 30 fps.
        "frames": (report["stats"]["video"]["framesEncoded"] if report else 30 * SECS),
        "cpu_s": cpu1 - cpu0,
    }


def main():
    work = tempfile.mkdtemp(prefix="livegate-bench-whip.")
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=640x480:rate=30", "-f", "lavfi", "-i", "sine=sample_rate=48000",
                    "-t", str(SECS), "-c:v", "libx264", "-preset", "veryfast", "-g", "60",
                    "-pix_fmt", "yuv420p", "-b:v", "1500k", "-c:a", "aac", "-f", "flv",
                    f"{work}/src.flv"], check=True)
    rows = [run(case, work) for case in ("whip-vp8", "whip-h264", "rtmp-h264")]
    rtmp = rows[-1]["cpu_s_per_media_s"]
    rtmp_frame = rows[-1]["cpu_s"] / rows[-1]["frames"]
    print(f"{'case':10} {'first master':>12} {'seg delay med/max':>18} {'CPU-s/media-s':>14} {'vs RTMP':>8}"
          f" {'CPU-ms/frame':>13} {'vs RTMP':>8}")
    for r in rows:
        fm = f"{r['first_master_s']:.2f} s" if r["first_master_s"] is not None else "-"
        d = (f"{r['delay_ms_median']:.0f}/{r['delay_ms_max']:.0f} ms"
             if r["delay_ms_median"] is not None else "-")
        per_frame = r["cpu_s"] / r["frames"]
        print(f"{r['case']:10} {fm:>12} {d:>18} {r['cpu_s_per_media_s']:>14.3f} "
              f"{r['cpu_s_per_media_s'] / rtmp:>7.2f}x {per_frame * 1000:>13.2f} "
              f"{per_frame / rtmp_frame:>7.2f}x")
    for r in rows:
        if r["chromium"]:
            print(f"{r['case']} Chromium stats: {json.dumps(r['chromium'])}")


main()

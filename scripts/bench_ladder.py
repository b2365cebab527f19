#!/usr/bin/env python3
"""Ladder benchmark (scripts/bench.sh ladder): livegate's in-process ladder against the reference
ffmpeg-CLI ladder (ffmpeg/reference-ladder.sh), measured in the same run on the same inputs.

For a generated 720p30 and 1080p30 input (SECONDS long, default 60) it prints, for each ladder:
CPU-seconds per media-second, the ratio livegate/CLI, peak RSS, and per-rung PSNR against the
source (ffmpeg's psnr filter, each rung scaled back to the source size). Also: the floor (one
decode, the three scales and the three bare x264 encodes, no audio, no muxing), the segment
availability delay through the ladder, and how many live 720p30 ladders keep real time at once.

livegate is measured against the CLI with transcode.source_rung = never (every rung encoded, like
the CLI). The 720p30 input (H.264, keyframes every 2 s, as OBS sends) is measured again with the
default source_rung = auto, which serves the source as the 720p rung and encodes 360p/480p only:
its CPU against never's in the same run, and how many live ladders fit in each mode.
"""
import json
import os
import re
import resource
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
PACE = os.path.join(ROOT, "target/release/examples/pace_publish")
HZ = os.sysconf("SC_CLK_TCK")
LADDER = [("360p", 360), ("480p", 480), ("720p", 720)]
# livegate's transcode.low_delay (default true: x264 tune=zerolatency), mirrored by the CLI
# reference ladder and the floor so the ratios compare like with like.
LOW_DELAY = os.environ.get("LIVEGATE_TRANSCODE_LOW_DELAY", "true") == "true"
TUNE = ["-tune", "zerolatency"] if LOW_DELAY else []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def proc_hwm_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return 0.0


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_measured(cmd):
    """Runs a command; returns (CPU seconds, peak RSS MB) of it alone."""
    before = children_cpu()
    start = time.time()
    proc = subprocess.Popen(cmd)
    peak = 0.0
    while proc.poll() is None:
        try:
            peak = max(peak, proc_hwm_mb(proc.pid))
        except OSError:
            pass
        time.sleep(0.2)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}")
    return children_cpu() - before, peak, time.time() - start


def encode_obs_like(path, seconds):
    """720p30 as OBS sends it by default: x264 veryfast, High, 2 B-frames, 3000 kbit/s, keyframe
    interval 2 s."""
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-pix_fmt", "yuv420p",
         "-b:v", "3000k", "-maxrate", "3000k", "-bufsize", "6000k",
         "-x264-params", "bframes=2:keyint=60:min-keyint=60:scenecut=0",
         "-c:a", "aac", "-b:a", "160k", "-f", "flv", path],
        check=True)


def encode_source(path, width, height, seconds):
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-b:v", "8000k",
         "-x264-params", "bframes=3:b-pyramid=normal:keyint=60:min-keyint=60:scenecut=0",
         "-c:a", "aac", "-b:a", "128k", "-f", "flv", path],
        check=True)


def concat_rung(playlist_dir_or_urls, out_path):
    """init + every segment of an fMP4 playlist into one file ffmpeg can read."""
    with open(out_path, "wb") as out:
        for chunk in playlist_dir_or_urls:
            out.write(chunk)


def local_rung_chunks(directory):
    text = open(os.path.join(directory, "index.m3u8")).read()
    init = re.search(r'#EXT-X-MAP:URI="([^"]+)"', text).group(1)
    yield open(os.path.join(directory, init), "rb").read()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            yield open(os.path.join(directory, line), "rb").read()


def frame_count(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                          "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", path],
                         capture_output=True, text=True).stdout.strip()
    return int(out) if out.isdigit() else -1


def psnr(distorted, source, width, height):
    """Average PSNR of a rung, scaled back to the source size, against the source, frame by
    frame. Frames are paired by index on one time base: pairing by timestamp is skewed by the
    FLV source's millisecond rounding (a frame at 66.7 ms would be compared with the one before
    the source's 67 ms frame), which once made the CLI look 15 dB worse than it is."""
    if frame_count(distorted) != frame_count(source):
        print(f"  warning: {distorted} has {frame_count(distorted)} frames, the source "
              f"{frame_count(source)}: PSNR pairs frames by index", flush=True)
    proc = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-i", distorted, "-i", source, "-lavfi",
         f"[0:v]scale={width}:{height}:flags=bicubic,settb=1/30,setpts=N[d];"
         f"[1:v]settb=1/30,setpts=N[r];[d][r]psnr", "-f", "null", "-"],
        capture_output=True, text=True)
    m = re.search(r"PSNR .*average:([0-9.]+|inf)", proc.stderr)
    return float(m.group(1)) if m else float("nan")


class Server:
    def __init__(self, workdir, extra_env=None):
        self.rtmp, self.http = free_port(), free_port()
        self.env = dict(os.environ, LIVEGATE_DATA_DIR=os.path.join(workdir, "data"),
                        LIVEGATE_RTMP_LISTEN=f"127.0.0.1:{self.rtmp}",
                        LIVEGATE_HTTP_LISTEN=f"127.0.0.1:{self.http}", LIVEGATE_LOG="warn",
                        # Measures how many ladders fit: no admission limit, and every
                        # publisher (all from 127.0.0.1, starting at once) let in.
                        LIVEGATE_TRANSCODE_MAX_LADDERS="0",
                        LIVEGATE_RTMP_MAX_CONNECTIONS_PER_IP="100",
                        LIVEGATE_RTMP_MAX_UNAUTHENTICATED_PER_IP="100",
                        **(extra_env or {}))
        self.log = open(os.path.join(workdir, "server.log"), "ab")
        self.proc = subprocess.Popen([BIN, "serve"], env=self.env, stderr=self.log)
        for _ in range(100):
            try:
                urllib.request.urlopen(self.url("/healthz"), timeout=1)
                break
            except OSError:
                time.sleep(0.1)

    def url(self, path):
        return f"http://127.0.0.1:{self.http}{path}"

    def add_key(self, user):
        out = subprocess.run([BIN, "keys", "add", user], env=self.env, check=True,
                             capture_output=True, text=True).stdout
        return out.strip().splitlines()[-1]

    def metric(self, name):
        text = urllib.request.urlopen(self.url("/metrics")).read().decode()
        m = re.search(rf"^{name} ([0-9.]+)", text, re.M)
        return float(m.group(1)) if m else 0.0

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class RungDownloader(threading.Thread):
    """Polls a stream's rung playlists and fetches every segment once, in order."""

    def __init__(self, server, user, rungs):
        super().__init__(daemon=True)
        self.server, self.user, self.rungs = server, user, rungs
        self.chunks = {r: [] for r in rungs}
        self.seen = {r: set() for r in rungs}
        self.init_seen = {r: None for r in rungs}
        self.done = threading.Event()

    def fetch(self, path):
        return urllib.request.urlopen(self.server.url(path), timeout=5).read()

    def poll(self):
        finished = True
        for r in self.rungs:
            try:
                text = self.fetch(f"/live/{self.user}/{r}/index.m3u8").decode()
            except OSError:
                finished = False
                continue
            for line in text.splitlines():
                if line.startswith("#EXT-X-MAP:"):
                    init = re.search(r'URI="([^"]+)"', line).group(1)
                    if self.init_seen[r] is None:
                        self.init_seen[r] = init
                        self.chunks[r].append(self.fetch(f"/live/{self.user}/{r}/{init}"))
                elif line and not line.startswith("#") and line not in self.seen[r]:
                    self.seen[r].add(line)
                    self.chunks[r].append(self.fetch(f"/live/{self.user}/{r}/{line}"))
            finished &= "#EXT-X-ENDLIST" in text
        return finished

    def run(self):
        while not self.done.is_set():
            if self.poll():
                return
            time.sleep(0.5)


NEVER = {"LIVEGATE_TRANSCODE_SOURCE_RUNG": "never"}
AUTO = {"LIVEGATE_TRANSCODE_SOURCE_RUNG": "auto"}


def livegate_ladder(source, workdir, height, env):
    """One live stream through livegate; returns CPU-s, peak RSS, delays, rung files."""
    server = Server(workdir, env)
    key = server.add_key("bench")
    rungs = [name for name, h in LADDER if h <= height]
    downloader = RungDownloader(server, "bench", rungs)
    downloader.start()
    cpu0 = proc_cpu(server.proc.pid)
    out = subprocess.run(
        [PACE, source, f"rtmp://127.0.0.1:{server.rtmp}/live/{key}",
         server.url("/live/bench"), "20", rungs[-1]],
        check=True, capture_output=True, text=True).stdout
    downloader.join(timeout=30)
    downloader.done.set()
    cpu = proc_cpu(server.proc.pid) - cpu0
    rss = proc_hwm_mb(server.proc.pid)
    dropped = server.metric("livegate_transcode_dropped_frames_total")
    server.stop()
    files = {}
    for r in rungs:
        path = os.path.join(workdir, f"livegate_{r}.mp4")
        concat_rung(downloader.chunks[r], path)
        files[r] = path
    return cpu, rss, json.loads(out)["segment_delays_ms"], files, dropped


def live_streams(server):
    return json.load(urllib.request.urlopen(server.url("/api/v1/streams")))


def source_rung_of(server, user):
    for s in live_streams(server):
        if s.get("user") == user or s.get("name") == user:
            return (s.get("transcode") or {}).get("source_rung", {})
    return {}


def concurrency(source, workdir, seconds, counts, env, label, reference=None):
    """How many live 720p30 ladders keep real time at once (no dropped frames). With a
    reference (the CLI's CPU-s per media-s for the same work), each ladder's cost against it."""
    results = []
    for n in counts:
        conc = os.path.join(workdir, f"conc_{label}_{n}")
        os.makedirs(conc, exist_ok=True)
        server = Server(conc, env)
        keys = [server.add_key(f"c{i}") for i in range(n)]
        pubs = [subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
                                  "-re", "-t", str(seconds), "-i", source, "-c", "copy",
                                  "-f", "flv", f"rtmp://127.0.0.1:{server.rtmp}/live/{k}"])
                for k in keys]
        time.sleep(min(8, seconds / 2))
        cpu0, t0 = proc_cpu(server.proc.pid), time.time()
        served = source_rung_of(server, "c0").get("rung")
        live = len(live_streams(server))
        if live != n:
            server.stop()
            sys.exit(f"{label}: {live} of {n} publishers are live; see {conc}/server.log")
        for p in pubs:
            p.wait()
        cpu = (proc_cpu(server.proc.pid) - cpu0) / max(time.time() - t0, 1e-3)
        time.sleep(3)
        dropped = server.metric("livegate_transcode_dropped_frames_total")
        server.stop()
        results.append((n, dropped))
        against = f" ({cpu / n / reference:.2f}x the CLI per ladder)" if reference else ""
        print(f"  {label}: {n} concurrent 720p30 ladder(s): {int(dropped)} frames dropped, "
              f"server {cpu:.2f} cores busy{against}, source served as {served or 'no rung'}",
              flush=True)
        if dropped > 0:
            break
    keeping = [n for n, d in results if d == 0]
    return max(keeping) if keeping else 0


def concurrent_ladders(work, seconds):
    """How many live 720p30 OBS-like sources keep real time with every rung encoded and with
    the source as the 720p rung."""
    src = os.path.join(work, "obs_720p30.flv")
    encode_obs_like(src, seconds)
    print(f"== concurrent live 720p30 ladders ({seconds} s each; OBS-like source: 3000 kbit/s, "
          f"High, 2 B-frames, keyframes every 2 s)", flush=True)
    # The same work as a source-rung ladder done by the ffmpeg CLI, this run, this host: one
    # decode, the 360p and 480p scales and encodes, one AAC encode. Hosts of one machine kind
    # have measured 2x apart; this is what the ladder counts are relative to.
    cli_cpu, _, _ = run_measured(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-i", src, "-filter_complex",
         "[0:v]split=2[a][b];[a]scale=-2:360[o1];[b]scale=-2:480[o2]"]
        + sum([["-map", f"[o{i}]", "-c:v", "libx264", "-preset", "veryfast", *TUNE, "-threads", "1",
                "-profile:v", "main", "-b:v", b, "-maxrate", m, "-bufsize", z, "-f", "null", "-"]
               for i, (b, m, z) in enumerate([("800k", "856k", "1200k"),
                                              ("1400k", "1498k", "2100k")], 1)], [])
        + ["-map", "0:a", "-c:a", "aac", "-b:a", "128k", "-f", "null", "-"])
    cli = cli_cpu / seconds
    print(f"  reference, this run: the ffmpeg CLI doing a source-rung ladder's work (decode, "
          f"360p + 480p, AAC) costs {cli:.3f} CPU-s per media-s ({os.cpu_count() / cli:.1f} "
          f"would fill {os.cpu_count()} cores)", flush=True)
    n_never = concurrency(src, work, seconds, range(1, 7), NEVER, "never")
    n_auto = concurrency(src, work, seconds, range(2, 11), AUTO, "auto", cli)
    print(f"  every rung encoded (never): {n_never} live 720p30 ladder(s) keep real time at once "
          f"on {os.cpu_count()} cores")
    print(f"  source as the 720p rung (auto): {n_auto} live 720p30 ladder(s) with 360p/480p keep "
          f"real time at once on {os.cpu_count()} cores ({n_auto / max(n_never, 1):.1f}x)")


def main():
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    work = tempfile.mkdtemp(prefix="livegate-ladder-bench.")
    if len(sys.argv) > 2 and sys.argv[2] == "concurrency":
        concurrent_ladders(work, min(30, seconds))
        return
    report = []
    print(f"x264 {'tune=zerolatency (transcode.low_delay = true)' if LOW_DELAY else 'B-frames + lookahead (transcode.low_delay = false)'}")
    for label, (w, h) in [("720p30", (1280, 720)), ("1080p30", (1920, 1080))]:
        print(f"== {label}, {seconds} s", flush=True)
        source = os.path.join(work, f"src_{label}.flv")
        encode_source(source, w, h, seconds)
        cli_dir = os.path.join(work, f"cli_{label}")
        cli_cpu, cli_rss, cli_wall = run_measured(
            ["bash", os.path.join(ROOT, "ffmpeg/reference-ladder.sh"), source, cli_dir])
        floor_cpu, _, _ = run_measured(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-i", source,
             "-filter_complex", "[0:v]split=3[a][b][c];[a]scale=-2:360[o1];[b]scale=-2:480[o2];[c]scale=-2:720[o3]"]
            + sum([["-map", f"[o{i}]", "-c:v", "libx264", "-preset", "veryfast", *TUNE, "-profile:v", "main",
                    "-b:v", b, "-maxrate", m, "-bufsize", s, "-g", "60", "-keyint_min", "60",
                    "-sc_threshold", "0", "-f", "null", "-"]
                   for i, (b, m, s) in enumerate([("800k", "856k", "1200k"), ("1400k", "1498k", "2100k"),
                                                  ("2800k", "2996k", "4200k")], 1)], []))
        decode_cpu, _, _ = run_measured(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-i", source, "-map", "0:v",
             "-f", "null", "-"])
        lg_dir = os.path.join(work, f"lg_{label}")
        os.makedirs(lg_dir)
        lg_cpu, lg_rss, delays, lg_files, dropped = livegate_ladder(source, lg_dir, h, NEVER)
        row = {"input": label, "cli_cpu": cli_cpu / seconds, "cli_rss": cli_rss,
               "lg_cpu": lg_cpu / seconds, "lg_rss": lg_rss, "floor": floor_cpu / seconds,
               "decode": decode_cpu / seconds, "dropped": dropped, "psnr": {}}
        for name, _ in LADDER:
            cli_file = os.path.join(work, f"cli_{label}_{name}.mp4")
            concat_rung(local_rung_chunks(os.path.join(cli_dir, name)), cli_file)
            row["psnr"][name] = (psnr(cli_file, source, w, h), psnr(lg_files[name], source, w, h))
        row["delay_median"] = statistics.median(delays)
        row["delay_p95"] = sorted(delays)[min(len(delays) - 1, round(0.95 * (len(delays) - 1)))]
        report.append(row)
        print(f"  CLI ladder:   {row['cli_cpu']:.3f} CPU-s per media-s, peak RSS {cli_rss:.0f} MB")
        print(f"  livegate:     {row['lg_cpu']:.3f} CPU-s per media-s, peak RSS {lg_rss:.0f} MB, "
              f"{int(dropped)} frames dropped")
        print(f"  ratio livegate/CLI: {row['lg_cpu'] / row['cli_cpu']:.3f}")
        print(f"  floor (1 decode + 3 scales + 3 bare x264 encodes): {row['floor']:.3f}; "
              f"decode alone {row['decode']:.3f}; livegate above the floor: "
              f"{row['lg_cpu'] - row['floor']:+.3f} CPU-s per media-s")
        for name, (c, l) in row["psnr"].items():
            print(f"  PSNR {name}: CLI {c:.2f} dB, livegate {l:.2f} dB ({l - c:+.2f})")
        print(f"  segment availability delay through the ladder ({LADDER[-1][0] if h >= 720 else ''}): "
              f"median {row['delay_median']:.0f} ms, p95 {row['delay_p95']:.0f} ms", flush=True)
        if h == 720:
            # The same input with the source served as the 720p rung (the default).
            auto_dir = os.path.join(work, f"lg_auto_{label}")
            os.makedirs(auto_dir)
            a_cpu, a_rss, a_delays, a_files, a_dropped = livegate_ladder(source, auto_dir, h, AUTO)
            row["auto_cpu"] = a_cpu / seconds
            print(f"  livegate, source as the 720p rung (source_rung = auto): "
                  f"{row['auto_cpu']:.3f} CPU-s per media-s, peak RSS {a_rss:.0f} MB, "
                  f"{int(a_dropped)} frames dropped; {row['auto_cpu'] / row['lg_cpu']:.3f}x "
                  f"the all-encoded ladder; 720p delay median {statistics.median(a_delays):.0f} ms")
            for name in ("360p", "480p"):
                print(f"  PSNR {name} (source as 720p): livegate "
                      f"{psnr(a_files[name], source, w, h):.2f} dB")
    concurrent_ladders(work, min(30, seconds))
    print("== summary")
    for row in report:
        worst = min(l - c for c, l in row["psnr"].values())
        print(f"  {row['input']}: livegate/CLI CPU {row['lg_cpu'] / row['cli_cpu']:.3f} "
              f"({row['lg_cpu']:.3f} vs {row['cli_cpu']:.3f}); PSNR livegate−CLI worst rung {worst:+.2f} dB; "
              f"floor {row['floor']:.3f}")


if __name__ == "__main__":
    main()

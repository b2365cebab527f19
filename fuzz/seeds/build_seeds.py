#!/usr/bin/env python3
"""Builds the committed seed corpora (fuzz/corpus/<target>/seed-*) from real encodes.

Media: tiny ffmpeg encodes (libx264, libx265, libsvtav1, aac, libopus). Configuration records
and AudioSpecificConfig/OpusHead come from ffprobe's extradata dump; packets from its packet
dump. Enhanced RTMP FLV (avc1/hvc1/av01 FourCC tags), which ffmpeg 5.1 cannot write, is built
from those packets exactly as OBS 30 sends it. RTMP session captures and spool files are made
by capture_rtmp.py (a recording proxy in front of the real server); see fuzz/README.md.

Usage: build_seeds.py WORKDIR CORPUS_DIR (needs ffmpeg and ffprobe).
"""
import json
import os
import re
import struct
import subprocess
import sys

WORK, CORPUS = sys.argv[1], sys.argv[2]
FF = ["nice", "-n", "10", "ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
SRC = ["-f", "lavfi", "-i", "testsrc2=size=96x54:rate=10"]
AUD = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
T = ["-t", "0.5"]
SVT = ["-f", "lavfi", "-i", "testsrc2=size=112x64:rate=10"]  # SVT-AV1 needs at least is 64 lines


def sh(args):
    subprocess.run(args, check=True, cwd=WORK)


def hexdump(text):
    out = bytearray()
    for line in text.splitlines():
        m = re.match(r"^[0-9a-f]{8}: ((?:[0-9a-f]{2,4} ?)+)", line.strip())
        if m:
            out += bytes.fromhex(m.group(1).replace(" ", ""))
    return bytes(out)


def probe(path, kind):
    """(extradata, [(pts_ms, dts_ms, key, data)]) of the first stream of `kind` (v or a)."""
    s = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", kind, "-show_streams", "-show_data",
         "-show_packets", "-of", "json", path], check=True, cwd=WORK, capture_output=True).stdout)
    extradata = hexdump(s["streams"][0].get("extradata", ""))
    packets = []
    for p in s.get("packets", []):
        pts = float(p.get("pts_time", p.get("dts_time", 0)))
        dts = float(p.get("dts_time", pts))
        packets.append((round(pts * 1000), round(dts * 1000), "K" in p["flags"], hexdump(p["data"])))
    return extradata, packets


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def flv_tag(kind, ms, body):
    ms &= 0xFFFFFFFF
    head = struct.pack(">B", kind) + struct.pack(">I", len(body))[1:] + \
        struct.pack(">I", ms & 0xFFFFFF)[1:] + bytes([ms >> 24]) + b"\0\0\0"
    return head + body + struct.pack(">I", 11 + len(body))


FLV_HEADER = b"FLV\x01\x05\0\0\0\x09" + b"\0\0\0\0"


def enhanced_flv(fourcc, record, packets, audio=None, frames=6):
    """Enhanced RTMP video tags (sequence start, coded frames with and without CTS), and
    legacy AAC audio tags when given (asc, packets)."""
    out = bytearray(FLV_HEADER)
    out += flv_tag(9, 0, bytes([0x90 | 0]) + fourcc + record)
    if audio:
        out += flv_tag(8, 0, b"\xaf\x00" + audio[0])
    for i, (pts, dts, key, data) in enumerate(packets[:frames]):
        ft = 1 if key else 2
        if fourcc == b"av01" or i % 2:
            body = bytes([0x80 | ft << 4 | 3]) + fourcc + data  # CodedFramesX / AV1
            if fourcc == b"av01":
                body = bytes([0x80 | ft << 4 | 1]) + fourcc + data
        else:
            cts = (pts - dts) & 0xFFFFFF
            body = bytes([0x80 | ft << 4 | 1]) + fourcc + struct.pack(">I", cts)[1:] + data
        out += flv_tag(9, max(dts, 0), body)
        if audio and i < len(audio[1]):
            a = audio[1][i]
            out += flv_tag(8, max(a[1], 0), b"\xaf\x01" + a[3])
    out += flv_tag(9, 600, bytes([0x80 | 1 << 4 | 2]) + fourcc)  # SequenceEnd
    return bytes(out)


def trim_flv(data, tags):
    """The header and the first `tags` tags of an FLV file."""
    at, n = 13, 0
    while at + 11 <= len(data) and n < tags:
        size = int.from_bytes(data[at + 1:at + 4], "big")
        at += 11 + size + 4
        n += 1
    return data[:at]


def nal_units_from_avcc(record):
    sps_count = record[5] & 0x1F
    at, out = 6, []
    for _ in range(sps_count):
        n = int.from_bytes(record[at:at + 2], "big")
        out.append(record[at + 2:at + 2 + n])
        at += 2 + n
    return out


def main():
    os.makedirs(WORK, exist_ok=True)
    enc = {
        "h264_high.mp4": SRC + AUD + T + ["-c:v", "libx264", "-profile:v", "high", "-bf", "2",
                                          "-g", "5", "-c:a", "aac", "-b:a", "24k"],
        "h264_base.mp4": SRC + T + ["-c:v", "libx264", "-profile:v", "baseline", "-g", "5"],
        "h264_main_hrd.mp4": SRC + T + ["-c:v", "libx264", "-profile:v", "main", "-x264-params",
                                        "nal-hrd=vbr:vbv-maxrate=200:vbv-bufsize=400"],
        "h264_422.mp4": SRC + T + ["-c:v", "libx264", "-pix_fmt", "yuv422p"],
        "h264_10.mp4": SRC + T + ["-c:v", "libx264", "-pix_fmt", "yuv420p10le"],
        "h264_crop.mp4": ["-f", "lavfi", "-i", "testsrc2=size=98x58:rate=10"] + T + ["-c:v", "libx264"],
        "hevc.mp4": SRC + AUD + T + ["-c:v", "libx265", "-x265-params", "log-level=error", "-g", "5",
                                     "-c:a", "aac", "-b:a", "24k", "-tag:v", "hvc1"],
        "hevc_10.mp4": ["-f", "lavfi", "-i", "testsrc2=size=100x58:rate=10"] + T +
                       ["-c:v", "libx265", "-x265-params", "log-level=error", "-pix_fmt", "yuv420p10le"],
        "av1.mp4": SVT + AUD + T + ["-c:v", "libsvtav1", "-g", "5", "-c:a", "libopus", "-b:a", "24k"],
        "av1_10.mp4": SVT + T + ["-c:v", "libsvtav1", "-pix_fmt", "yuv420p10le"],
        "aac_44_mono.m4a": ["-f", "lavfi", "-i", "sine=sample_rate=44100"] + T + ["-c:a", "aac", "-ac", "1"],
        "aac_main_8k.m4a": ["-f", "lavfi", "-i", "sine=sample_rate=8000"] + T + ["-c:a", "aac", "-profile:a", "aac_main"],
        "aac_51.m4a": AUD + T + ["-ac", "6", "-c:a", "aac"],
        "aac_7350.m4a": ["-f", "lavfi", "-i", "sine=sample_rate=7350"] + T + ["-c:a", "aac"],
        "opus_mono.ogg": AUD + T + ["-ac", "1", "-c:a", "libopus"],
        "opus_51.ogg": AUD + T + ["-ac", "6", "-c:a", "libopus"],
        "legacy.flv": SRC + AUD + T + ["-c:v", "libx264", "-bf", "2", "-g", "5", "-c:a", "aac", "-b:a", "24k"],
        "legacy_mono44.flv": ["-f", "lavfi", "-i", "testsrc2=size=64x36:rate=10", "-f", "lavfi", "-i",
                              "sine=sample_rate=44100"] + T + ["-c:v", "libx264", "-profile:v", "baseline",
                                                               "-c:a", "aac", "-ac", "1", "-b:a", "16k"],
        "annexb.h264": SRC + T + ["-c:v", "libx264", "-bf", "2", "-g", "5", "-f", "h264"],
    }
    for name, args in enc.items():
        sh(FF + args + [name])

    h264 = {}
    for name in ["h264_high.mp4", "h264_base.mp4", "h264_main_hrd.mp4", "h264_422.mp4", "h264_10.mp4",
                 "h264_crop.mp4"]:
        rec, pk = probe(name, "v")
        h264[name] = (rec, pk)
        write("avc_config", name + ".avcC", rec)
        write("annexb", name + ".avcC", b"\x00" + rec)
        for i, sps in enumerate(nal_units_from_avcc(rec)):
            write("avc_sps", f"{name}.sps{i}", sps)
        write("annexb", name + ".frame", b"\x02" + pk[0][3][:2048])
    for name in ["hevc.mp4", "hevc_10.mp4"]:
        rec, _ = probe(name, "v")
        write("hevc_config", name + ".hvcC", rec)
    for name in ["av1.mp4", "av1_10.mp4"]:
        rec, pk = probe(name, "v")
        write("av1_config", name + ".av1C", rec)
        write("av1_config", name + ".frame", pk[1][3][:2048])
    for name, kind in [("h264_high.mp4", "a"), ("hevc.mp4", "a"), ("aac_44_mono.m4a", "a"),
                       ("aac_main_8k.m4a", "a"), ("aac_51.m4a", "a"), ("aac_7350.m4a", "a")]:
        asc, _ = probe(name, kind)
        write("aac_config", name + ".asc", asc)
    for name in ["opus_mono.ogg", "opus_51.ogg", "av1.mp4"]:
        head, _ = probe(name, "a")
        write("opus_head", name + ".OpusHead", head)
    with open(os.path.join(WORK, "annexb.h264"), "rb") as f:
        write("annexb", "annexb.h264", b"\x01" + f.read()[:3000])

    # FLV: ffmpeg's legacy tags, and Enhanced RTMP built from the mp4 packets.
    for name in ["legacy.flv", "legacy_mono44.flv"]:
        with open(os.path.join(WORK, name), "rb") as f:
            write("flv_demux", name, trim_flv(f.read(), 12))
    asc, apk = probe("h264_high.mp4", "a")
    rec, pk = h264["h264_high.mp4"]
    write("flv_demux", "enhanced_avc1.flv", enhanced_flv(b"avc1", rec, pk, (asc, apk)))
    rec, pk = probe("hevc.mp4", "v")
    write("flv_demux", "enhanced_hvc1.flv", enhanced_flv(b"hvc1", rec, pk, (asc, apk)))
    rec, pk = probe("av1.mp4", "v")
    write("flv_demux", "enhanced_av01.flv", enhanced_flv(b"av01", rec, pk))

    # HTTP Range: 8 bytes of body length, then the header value, as browsers and curl send it.
    for i, (length, header) in enumerate([
            (1_000_000, "bytes=0-"), (1_000_000, "bytes=0-1023"), (1_000_000, "bytes=-500"),
            (1_000_000, "bytes=999999-"), (100, "bytes=0-0,-1"), (100, "BYTES= 5 - 9 "),
            (0, "bytes=0-"), (18446744073709551615, "bytes=18446744073709551614-")]):
        write("http_range", f"{i}", struct.pack("<Q", length) + header.encode())


def segmenter_seeds():
    """`arbitrary` input has no file format to capture: a few fixed pseudo-random inputs."""
    import random
    for i, n in enumerate([64, 256, 1024, 4000]):
        write("timeline_segmenter", f"random{i}", random.Random(i).randbytes(n))


if __name__ == "__main__":
    segmenter_seeds()
    main()

#!/usr/bin/env python3
"""Writes real video RTP payloads to fuzz/corpus/codec_inspect/ (run on demand; the files are
committed). ffmpeg (Debian's 5.1) encodes its lavfi test pattern with libvpx (VP8, VP9) and
libx264 and packetizes it with its RTP muxer to a loopback UDP port this script reads; AV1
(no RTP muxer in ffmpeg 5.1) is encoded by libaom to a raw OBU stream and the first temporal
unit is put behind an AV1 aggregation header here. Each seed is the body's codec selector
byte (VP8 0, VP9 1, H.264 2, AV1 3; +0x80 for the marker) followed by the payload.

Usage: fuzz/tools/codec_seeds.py   (from the repository root or anywhere)
"""
import os
import socket
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus", "codec_inspect")
SELECTOR = {"vp8": 0, "vp9": 1, "h264": 2, "av1": 3}


def put(name, sel, marker, payload):
    os.makedirs(ROOT, exist_ok=True)
    with open(os.path.join(ROOT, name), "wb") as f:
        f.write(bytes([sel | (0x80 if marker else 0)]) + payload)


def capture(codec, encoder_args, count=400):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    port = sock.getsockname()[1]
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
           "testsrc=size=640x360:rate=30", "-t", "3", *encoder_args, "-f", "rtp",
           f"rtp://127.0.0.1:{port}?pkt_size=1200"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    pkts = []
    try:
        while len(pkts) < count:
            data, _ = sock.recvfrom(2048)
            pkts.append(data)
    except socket.timeout:
        pass
    proc.kill()
    proc.wait()
    out = []
    for p in pkts:
        cc = p[0] & 0x0F
        hl = 12 + 4 * cc
        if p[0] & 0x10:
            hl += 4 + 4 * int.from_bytes(p[hl + 2:hl + 4], "big")
        out.append((bool(p[1] & 0x80), p[hl:]))
    return out


def pick(name, pkts):
    """The first packet, the last of the first frame, the first of the second frame, one more
    delta frame start and a middle packet."""
    sel = SELECTOR[name]
    if not pkts:
        sys.exit(f"no {name} packets captured")
    ends = [i for i, (m, _) in enumerate(pkts) if m]
    chosen = {"first": 0}
    if ends:
        chosen["first_frame_end"] = ends[0]
        if ends[0] + 1 < len(pkts):
            chosen["second_frame_start"] = ends[0] + 1
    if len(ends) > 5 and ends[4] + 1 < len(pkts):
        chosen["delta_frame_start"] = ends[4] + 1
    chosen["middle"] = len(pkts) // 2
    for label, i in chosen.items():
        m, payload = pkts[i]
        put(f"ffmpeg_{name}_{label}", sel, m, payload[:1300])


def leb128(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_leb128(buf, i):
    v, shift = 0, 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def av1():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "out.obu")
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                        "testsrc=size=320x180:rate=30", "-frames:v", "3", "-c:v", "libaom-av1",
                        "-cpu-used", "8", "-f", "obu", path], check=True)
        data = open(path, "rb").read()
    obus, i = [], 0
    while i < len(data):
        h = data[i]
        ext = 1 if h & 0x04 else 0
        size, j = read_leb128(data, i + 1 + ext)
        obus.append(((h >> 3) & 0x0F, data[i:j + size]))
        i = j + size
    # RTP drops temporal delimiters (type 2); keep the sequence header and the first frame.
    seq = next(o for t, o in obus if t == 1)
    frame = next(o for t, o in obus if t == 6)
    # Packet 1: N, W=2: the sequence header with its length, the frame's head (Y: continues).
    head = frame[:600]
    put("libaom_av1_keyframe_first", 3, False,
        bytes([0x40 | 0x20 | 0x08]) + leb128(len(seq)) + seq + head)
    # Packet 2: Z, W=1: the rest of the frame, marker.
    put("libaom_av1_keyframe_last", 3, True, bytes([0x80 | 0x10]) + frame[600:1800])
    # A later frame, whole, W=0 (every element with its length).
    later = [o for t, o in obus if t == 6][1:2]
    if later:
        put("libaom_av1_delta", 3, True, bytes([0x00]) + leb128(len(later[0][:1000])) + later[0][:1000])


def main():
    pick("vp8", capture("vp8", ["-c:v", "libvpx", "-deadline", "realtime", "-b:v", "800k",
                                "-g", "30"]))
    pick("vp9", capture("vp9", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-b:v", "800k",
                                "-g", "30", "-strict", "experimental"]))
    pick("h264", capture("h264", ["-c:v", "libx264", "-tune", "zerolatency", "-profile:v",
                                  "baseline", "-pix_fmt", "yuv420p", "-b:v", "800k", "-g", "30"]))
    av1()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Open as many TURN allocations as a server grants (stdlib only; tools/bench_turn.sh and
tests/turn_scale.rs use it).

Every allocation needs its own client 5-tuple. On loopback the whole of 127.0.0.0/8 is local, so
one UDP socket (bound to the wildcard address, IP_PKTINFO) plays every client: client k sends from
its own source address 127.x.y.z and its answers come back addressed to it. The client side
therefore needs one file descriptor whatever COUNT is, and the server's kernel and process are all
that is measured. With --peer IP:PORT every allocation also gets a permission for that peer (the
CreatePermission a browser sends for the SFU's candidate). The allocations stay open until stdin
closes or --hold seconds pass, so the server's memory can be read while they are alive.

Usage: turn_alloc_flood.py HOST PORT USER PASSWORD REALM COUNT [--batch N] [--hold S] [--peer A:P]
HOST must be a loopback address. Prints progress lines and a final line
`allocations=<granted> failed=<n> first_error=<code>`.
"""

import hashlib
import hmac
import os
import socket
import struct
import sys
import time
import zlib

MAGIC = 0x2112A442
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux; missing from some Python builds
ALLOCATE, CREATE_PERMISSION = 0x0003, 0x0008


def attr(t, v):
    pad = (4 - len(v) % 4) % 4
    return struct.pack("!HH", t, len(v)) + v + b"\0" * pad


def message(method, txid, attrs, key=None):
    body = b"".join(attrs)
    if key is not None:
        # MESSAGE-INTEGRITY over the header with the length including the MI attribute.
        head = struct.pack("!HHI", method, len(body) + 24, MAGIC) + txid
        mac = hmac.new(key, head + body, hashlib.sha1).digest()
        body += attr(0x0008, mac)
    # FINGERPRINT over everything before it, length including the fingerprint.
    head = struct.pack("!HHI", method, len(body) + 8, MAGIC) + txid
    crc = (zlib.crc32(head + body) ^ 0x5354554E) & 0xFFFFFFFF
    body += attr(0x8028, struct.pack("!I", crc))
    return struct.pack("!HHI", method, len(body), MAGIC) + txid + body


def parse(buf):
    """(message type, txid, {attr type: value})"""
    if len(buf) < 20:
        return None
    mtype, length, magic = struct.unpack("!HHI", buf[:8])
    if magic != MAGIC:
        return None
    attrs, off = {}, 20
    while off + 4 <= 20 + length and off + 4 <= len(buf):
        t, n = struct.unpack("!HH", buf[off:off + 4])
        attrs.setdefault(t, buf[off + 4:off + 4 + n])
        off += 4 + n + (4 - n % 4) % 4
    return mtype, buf[8:20], attrs


def error_code(attrs):
    v = attrs.get(0x0009)
    return v[2] * 100 + v[3] if v and len(v) >= 4 else None


def xor_peer(addr):
    ip, port = addr.rsplit(":", 1)
    raw = struct.unpack("!I", socket.inet_aton(ip))[0]
    return attr(0x0012, struct.pack("!BBHI", 0, 1, int(port) ^ (MAGIC >> 16), raw ^ MAGIC))


def source(k):
    """Client k's source address: 127.100.0.1, 127.100.0.2, ... (never .0 or .255)."""
    a, b = divmod(k, 254)
    return f"127.{100 + a // 256}.{a % 256}.{b + 1}"


class Client:
    __slots__ = ("src", "state", "txid", "last", "nonce")

    def __init__(self, src):
        self.src, self.state, self.txid, self.last, self.nonce = src, 0, None, None, b""


def main():
    args = sys.argv[1:]
    opts = {"--batch": "500", "--hold": None, "--peer": None}
    for name in list(opts):
        if name in args:
            i = args.index(name)
            opts[name] = args[i + 1]
            del args[i:i + 2]
    batch = int(opts["--batch"])
    hold = None if opts["--hold"] is None else float(opts["--hold"])
    peer = opts["--peer"]
    host, port, user, password, realm, count = args[0], int(args[1]), args[2], args[3], args[4], int(args[5])
    if not host.startswith("127."):
        sys.exit("turn_alloc_flood: HOST must be a loopback address (clients are 127.x.y.z)")
    server = (host, port)
    key = hashlib.md5(f"{user}:{realm}:{password}".encode()).digest()
    transport = attr(0x0019, bytes([17, 0, 0, 0]))
    auth = lambda nonce: [attr(0x0006, user.encode()), attr(0x0014, realm.encode()), attr(0x0015, nonce)]

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    sock.bind(("0.0.0.0", 0))
    sock.settimeout(0.2)

    def send(c, msg):
        c.last = msg
        info = struct.pack("@I4s4s", 0, socket.inet_aton(c.src), b"\0\0\0\0")
        try:
            sock.sendmsg([msg], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, server)
        except (BlockingIOError, socket.timeout):
            pass  # retransmitted below

    granted, failed, first_error = 0, 0, None
    started = time.time()
    next_k = 0
    while granted + failed < count:
        n = min(batch, count - granted - failed)
        pending = {}
        for _ in range(n):
            c = Client(source(next_k))
            next_k += 1
            c.txid = os.urandom(12)
            pending[c.src] = c
            send(c, message(ALLOCATE, c.txid, [transport]))
        deadline = time.time() + 10
        last_send = time.time()
        while pending and time.time() < deadline:
            try:
                buf, anc, _, _ = sock.recvmsg(2048, 64)
            except socket.timeout:
                buf = None
            if buf is None or time.time() - last_send > 1.0:
                # Retransmit what is still waiting (UDP loss under load).
                for c in pending.values():
                    send(c, c.last)
                last_send = time.time()
                if buf is None:
                    continue
            dst = None
            for level, kind, data in anc:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
                    dst = socket.inet_ntoa(data[8:12])
            c = pending.get(dst)
            p = parse(buf)
            if c is None or not p or p[1] != c.txid:
                continue
            mtype, _, attrs = p
            if c.state == 0 and mtype == 0x0113 and error_code(attrs) == 401:
                # The nonce is bound to the client's address.
                c.nonce = attrs.get(0x0015, b"")
                c.state, c.txid = 1, os.urandom(12)
                send(c, message(ALLOCATE, c.txid, [transport] + auth(c.nonce), key))
            elif c.state == 1 and mtype == 0x0103 and peer:
                c.state, c.txid = 2, os.urandom(12)
                send(c, message(CREATE_PERMISSION, c.txid, [xor_peer(peer)] + auth(c.nonce), key))
            elif (c.state == 1 and mtype == 0x0103) or (c.state == 2 and mtype == 0x0108):
                granted += 1
                del pending[dst]
            else:
                failed += 1
                if first_error is None:
                    first_error = error_code(attrs)
                del pending[dst]
        for _ in pending:
            failed += 1
            if first_error is None:
                first_error = "timeout"
        print(f"progress allocations={granted} failed={failed} elapsed={time.time() - started:.1f}s", flush=True)
        if failed >= 1000:
            break
    print(f"allocations={granted} failed={failed} first_error={first_error}", flush=True)
    if hold is not None:
        time.sleep(hold)
    else:
        sys.stdin.read()


if __name__ == "__main__":
    main()

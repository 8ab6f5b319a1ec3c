#!/usr/bin/env python3
"""Open as many TURN allocations as a server grants (stdlib only; used by tools/bench_turn.sh).

Each allocation needs its own client 5-tuple, so this opens one UDP socket per allocation (raise
the open-file limit first) and keeps them all open until it is told to stop (stdin closes or
--hold seconds pass): the server's memory can be read while the allocations are alive.

Usage: turn_alloc_flood.py HOST PORT USER PASSWORD REALM COUNT [--batch N] [--hold S]
Prints progress lines and a final line `allocations=<granted> failed=<n> first_error=<code>`.
"""

import hashlib
import hmac
import os
import select
import socket
import struct
import sys
import time
import zlib

MAGIC = 0x2112A442


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


def main():
    args = sys.argv[1:]
    batch, hold = 500, None
    if "--batch" in args:
        i = args.index("--batch")
        batch = int(args[i + 1])
        del args[i:i + 2]
    if "--hold" in args:
        i = args.index("--hold")
        hold = float(args[i + 1])
        del args[i:i + 2]
    host, port, user, password, realm, count = args[0], int(args[1]), args[2], args[3], args[4], int(args[5])
    server = (host, port)
    key = hashlib.md5(f"{user}:{realm}:{password}".encode()).digest()
    transport = attr(0x0019, bytes([17, 0, 0, 0]))
    socks, granted, failed, first_error = [], 0, 0, None
    started = time.time()
    while granted + failed < count:
        n = min(batch, count - granted - failed)
        group = []
        ep = select.epoll()
        by_fd = {}
        out_of_fds = False
        for k in range(n):
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            except OSError:
                # This process's own open-file limit: report what the server granted so far.
                out_of_fds = True
                break
            s.setblocking(False)
            # An ephemeral port range holds ~28k sockets per address: spread the clients over
            # 127.0.2.1..127.0.2.16 (all loopback) when the server is on loopback.
            idx = granted + failed + k
            src = f"127.0.2.{1 + idx % 16}" if host.startswith("127.") else host
            s.bind((src, 0))
            group.append(s)
            by_fd[s.fileno()] = s
            ep.register(s.fileno(), select.EPOLLIN)
        # state per socket: 0 = waiting for the challenge, 1 = waiting for the answer
        state, txids, tries = {}, {}, {}
        for s in group:
            txid = os.urandom(12)
            txids[s] = txid
            state[s] = 0
            tries[s] = 0
            s.sendto(message(0x0003, txid, [transport]), server)
        pending = set(group)
        deadline = time.time() + 10
        last_send = time.time()
        while pending and time.time() < deadline:
            r = [by_fd[fd] for fd, _ in ep.poll(0.2)]
            if not r and time.time() - last_send > 1.0:
                # Retransmit what is still waiting (UDP loss under load).
                for s in pending:
                    tries[s] += 1
                    if state[s] == 0:
                        s.sendto(message(0x0003, txids[s], [transport]), server)
                last_send = time.time()
                continue
            for s in r:
                if s not in pending:
                    continue
                try:
                    buf = s.recv(2048)
                except OSError:
                    continue
                p = parse(buf)
                if not p or p[1] != txids[s]:
                    continue
                mtype, _, attrs = p
                if state[s] == 0 and mtype == 0x0113 and error_code(attrs) == 401:
                    nonce = attrs.get(0x0015, b"")
                    txid = os.urandom(12)
                    txids[s] = txid
                    state[s] = 1
                    s.sendto(message(0x0003, txid, [transport, attr(0x0006, user.encode()),
                                                    attr(0x0014, realm.encode()), attr(0x0015, nonce)], key), server)
                elif state[s] == 1 and mtype == 0x0103:
                    granted += 1
                    socks.append(s)
                    pending.discard(s)
                else:
                    failed += 1
                    if first_error is None:
                        first_error = error_code(attrs)
                    pending.discard(s)
                    s.close()
        ep.close()
        for s in pending:
            failed += 1
            if first_error is None:
                first_error = "timeout"
            s.close()
        print(f"progress allocations={granted} failed={failed} elapsed={time.time() - started:.1f}s", flush=True)
        if out_of_fds:
            first_error = first_error or "client out of file descriptors"
            break
        if failed > 0 and first_error is not None and granted + failed >= count:
            break
        if failed >= 1000:
            break
    print(f"allocations={granted} failed={failed} first_error={first_error}", flush=True)
    if hold is not None:
        time.sleep(hold)
    else:
        sys.stdin.read()


if __name__ == "__main__":
    main()

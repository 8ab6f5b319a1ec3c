# Extracts UDP payloads from the two captures (enc.pcap, plain.pcap) and writes the chrome156_*
# seeds into fuzz/corpus/<target>/. Usage: python3 fuzz/tools/pcap_seeds.py (run from the repo root
# with the captures in /tmp/cap).
import collections, os, struct, sys
def payloads(path):
    d = open(path,'rb').read()
    magic, = struct.unpack('<I', d[:4]); linktype, = struct.unpack('<I', d[20:24])
    off = 24; out = []
    while off + 16 <= len(d):
        ts, tus, incl, orig = struct.unpack('<IIII', d[off:off+16]); off += 16
        pkt = d[off:off+incl]; off += incl
        if linktype == 1: ip = pkt[14:]
        elif linktype == 113: ip = pkt[16:]
        elif linktype == 276: ip = pkt[20:]
        else: ip = pkt
        ver = ip[0] >> 4
        if ver == 4:
            ihl = (ip[0] & 15) * 4; proto = ip[9]; udp = ip[ihl:]
        elif ver == 6:
            proto = ip[6]; udp = ip[40:]
        else: continue
        if proto != 17: continue
        out.append(udp[8:])
    return out
for path in sys.argv[1:]:
    ps = payloads(path)
    c = collections.Counter()
    for p in ps:
        b = p[0]
        k = 'stun' if b < 4 else 'dtls' if 20 <= b < 64 else 'rtp/rtcp' if 128 <= b < 192 else 'other'
        if k == 'rtp/rtcp': k = 'rtcp' if 192 <= p[1] <= 223 else 'rtp'
        c[k] += 1
    print(path, len(ps), dict(c))

def pick(path):
    return payloads(path)
enc = payloads('/tmp/cap/enc.pcap'); plain = payloads('/tmp/cap/plain.pcap')
C = 'fuzz/corpus'
def save(targets, name, data):
    for t in targets:
        with open(os.path.join(C, t, name), 'wb') as f: f.write(data)
    print(name, len(data), targets)
def attrs(p):
    i = 20; out = []
    while i + 4 <= len(p):
        t = int.from_bytes(p[i:i+2],'big'); l = int.from_bytes(p[i+2:i+4],'big'); out.append(t); i += 4 + ((l+3)//4)*4
    return out
stun = [p for p in enc if p[0] < 4]
req_uc = next(p for p in stun if p[:2] == b'\x00\x01' and 0x25 in attrs(p))
req = next(p for p in stun if p[:2] == b'\x00\x01' and 0x25 not in attrs(p))
resp = next(p for p in stun if p[:2] == b'\x01\x01')
S = ['stun', 'stun_roundtrip', 'stun_diff']
save(S + ['demux'], 'chrome156_binding_request_use_candidate', req_uc)
save(S, 'chrome156_binding_request', req)
save(S + ['demux'], 'chrome156_binding_success', resp)
dtls = [p for p in enc if 20 <= p[0] < 64]
save(['dtls_record', 'demux'], 'chrome156_client_hello', dtls[0])
for i, p in enumerate(dtls[1:3]):
    save(['dtls_record'], f'chrome156_dtls_flight{i+2}', p)
rtp = [p for p in plain if p[0] >= 128 and not (192 <= p[1] <= 223)]
vid = [p for p in rtp if (p[1] & 0x7f) in (96, 97, 98, 99, 100, 101, 45, 46, 102, 103, 104, 105, 106, 107, 108, 109, 127, 35, 36, 39, 40, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125)]
aud = [p for p in rtp if (p[1] & 0x7f) == 111]
R = ['rtp', 'rtp_rewrite', 'rtp_diff']
big = max(vid, key=len); marker = next(p for p in vid if p[1] & 0x80)
save(R + ['demux'], 'chrome156_video_rtp_ext', big)
save(R, 'chrome156_video_rtp_marker', marker)
save(R, 'chrome156_audio_rtp_ext', aud[5])
srtp = [p for p in enc if p[0] >= 128 and not (192 <= p[1] <= 223)]
save(['rtp'], 'chrome156_srtp_video', max(srtp, key=len))
rtcp = [p for p in plain if p[0] >= 128 and 192 <= p[1] <= 223]
def pts(p):
    i = 0; out = []
    while i + 4 <= len(p):
        out.append((p[i+1], p[i] & 31)); i += 4 * (int.from_bytes(p[i+2:i+4],'big') + 1)
    return out
T = ['rtcp', 'rtcp_roundtrip', 'rtcp_diff']
twcc = next((p for p in rtcp if (205, 15) in pts(p)), None)
sr = next((p for p in rtcp if pts(p) and pts(p)[0][0] == 200), None)
remb = next((p for p in rtcp if (206, 15) in pts(p)), None)
nack = next((p for p in rtcp if (205, 1) in pts(p)), None)
pli = next((p for p in rtcp if (206, 1) in pts(p)), None)
for name, p in [('twcc', twcc), ('sr_sdes', sr), ('remb', remb), ('nack', nack), ('pli', pli)]:
    if p: save(T + (['demux'] if name == 'twcc' else []), f'chrome156_rtcp_{name}', p)
    else: print('no', name)
print('rtcp kinds seen:', sorted({k for p in rtcp for k in pts(p)}))

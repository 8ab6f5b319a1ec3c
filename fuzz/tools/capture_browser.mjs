// Two RTCPeerConnections in headless Chromium exchanging fake camera and microphone media over
// loopback for 4 s, so that tcpdump on lo captures real browser STUN, DTLS, RTP and RTCP.
// Usage (from tests/js, as root): tcpdump -i lo -w enc.pcap udp & node ../../fuzz/tools/capture_browser.mjs
// and again with --disable-webrtc-encryption as argument for plaintext RTP/RTCP (no DTLS).
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, startPageServer } from '../../tests/js/lib/browser.mjs';
import fs from 'node:fs';
const extra = process.argv[2] ? [process.argv[2]] : [];
const dir = fs.mkdtempSync('/tmp/ringsfu-capture-');
const ctx = await chromium.launchPersistentContext(dir, { executablePath: '/usr/bin/chromium', headless: true, args: [...CHROMIUM_ARGS, ...extra] });
const srv = await startPageServer();
const p = await ctx.newPage(); await p.goto(srv.url);
const r = await p.evaluate(async () => {
  const ms = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  const a = new RTCPeerConnection(), b = new RTCPeerConnection();
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
  for (const t of ms.getTracks()) a.addTrack(t, ms);
  await a.setLocalDescription(); await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(); await a.setRemoteDescription(b.localDescription);
  await new Promise((r) => setTimeout(r, 4000));
  const st = await b.getStats(); let frames = 0; st.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') frames = s.framesDecoded; });
  return frames;
});
console.log('frames decoded', r);
await ctx.close(); await srv.close();

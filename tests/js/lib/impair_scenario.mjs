// One measurement over impaired links (issue 19): a publisher and a subscriber, each a headless
// Chromium in a network namespace of its own joined to this one by a veth pair (its "link"), talk
// either through ringsfu (openvidu-browser, mode `sfu`) or to each other directly (a plain
// RTCPeerConnection call routed through this namespace, mode `direct`). Each of the four link
// directions (publisher up/down, subscriber up/down) sends its UDP packets to an NFQUEUE served
// by a `ringsfu-load impair` relay with that direction's loss, delay, jitter and reordering
// (src/load/impair.rs), so both modes cross exactly the same impairments: publisher up, then
// subscriber down, for media. Root only; run inside a namespace the caller made (with `lo` up),
// e.g. `unshare --net sh -c 'ip link set lo up && exec node impair_scenario.mjs'`.
//
// IMPAIR_CONFIG (JSON): { mode: 'sfu'|'direct', seconds, warmupPackets, links: { pubUp, pubDown,
// subUp, subDown } } where each link is the relay's flags (e.g. ["--loss", "10"]). After the
// subscriber has received `warmupPackets` video packets, a window of `seconds`; prints one line
// `RESULT {json}`: the subscriber's inbound video statistics at both ends of the window, their
// difference (`summary`), the relays' counts and, in mode sfu, the server's NACK/RTX counters.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { createRequire } from 'node:module';
import { startServer, until, ringsfuBin, basicAuth } from './server.mjs';
import { startPageServer } from './browser.mjs';
import { createNetns, chromiumIn, tcpForward, sh } from './netns.mjs';

const require = createRequire(import.meta.url);
const { OpenVidu } = require('openvidu-node-client');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const cfg = JSON.parse(process.env.IMPAIR_CONFIG || '{}');
const mode = cfg.mode || 'sfu';
const seconds = Number(cfg.seconds || 30);
const warmup = Number(cfg.warmupPackets || 400);
const links = cfg.links || {};
const relayBin = process.env.RINGSFU_LOAD_BIN || path.join(path.dirname(ringsfuBin()), 'ringsfu-load');

/** Starts one relay on `queue`; resolves once it says READY (bounded: 10 s). */
function startRelay(label, queue, flags) {
  const proc = spawn(relayBin, ['impair', '--queue', String(queue), '--label', label, ...flags],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout.on('data', (d) => { out += d; });
  proc.stderr.on('data', (d) => { err += d; });
  const exited = new Promise((r) => proc.on('exit', r));
  const relay = {
    label,
    async stop() {
      proc.kill('SIGTERM');
      await Promise.race([exited, sleep(5000)]);
      const line = out.split('\n').find((l) => l.startsWith('{'));
      return line ? JSON.parse(line) : { label, error: `no stats: ${err}` };
    },
  };
  return until(() => (out.includes('READY') ? relay : (proc.exitCode !== null
    ? Promise.reject(new Error(`relay ${label} exited: ${err}`)) : null)),
  `relay ${label} ready`, { tries: 200, everyMs: 50 });
}

/** The server's counters that say how NACKs were answered (summed over shards). */
async function serverCounters(server) {
  const want = ['ringsfu_shard_nacks_in_total', 'ringsfu_shard_nacks_out_total',
    'ringsfu_shard_nacks_renewed_total',
    'ringsfu_shard_rtx_out_total', 'ringsfu_shard_rtx_missing_total',
    'ringsfu_shard_rtx_too_old_total', 'ringsfu_shard_rtx_over_budget_total',
    'ringsfu_shard_pli_out_total', 'ringsfu_consumer_rtx_refused_total',
    'ringsfu_consumer_estimate_bps', 'ringsfu_consumer_rtt_milliseconds'];
  const r = await fetch(`${server.url}/metrics`, { headers: { Authorization: basicAuth() } });
  const text = await r.text();
  const out = {};
  for (const line of text.split('\n')) {
    const m = line.match(/^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$/);
    if (m && want.includes(m[1])) out[m[1]] = (out[m[1]] || 0) + Number(m[3]);
    // Packets the media core dropped, by reason (non-zero ones only).
    const d = line.match(/^ringsfu_shard_media_drops_total\{.*reason="([a-z_]+)".*\} ([0-9]+)$/);
    if (d && Number(d[2]) > 0) out[`drop_${d[1]}`] = (out[`drop_${d[1]}`] || 0) + Number(d[2]);
  }
  return out;
}

const KEYS = ['freezeCount', 'freezeSeconds', 'videoPackets', 'videoLost', 'retransmitted',
  'nackCount', 'pliCount', 'framesDecoded', 'framesDropped', 'framesEncoded', 'packetsSent',
  'retransmittedSent', 'nacksReceived'];

function summarize(a, b) {
  const d = {};
  for (const k of KEYS) d[k] = (b[k] || 0) - (a[k] || 0);
  d.freezeSeconds = Number(d.freezeSeconds.toFixed(3));
  // An upper bound of the share repaired: RTX packets received per media packet lost (an RTX
  // can also repair a packet only late, not lost, or come twice).
  d.recoveredShare = d.videoLost > 0 ? Number(Math.min(1, d.retransmitted / d.videoLost).toFixed(3)) : null;
  return d;
}

const cleanup = [];
let result;
try {
  sh('sysctl -qw net.ipv4.ip_forward=1');
  const nsA = createNetns(1);
  cleanup.push(() => nsA.destroy());
  const nsB = createNetns(2);
  cleanup.push(() => nsB.destroy());
  // Queue numbers and rules are per namespace (this one): up = into this namespace from the
  // client's side of its pair, down = out to it.
  const dirs = [['pubUp', 0, `PREROUTING -i ${nsA.hostIf}`], ['pubDown', 1, `POSTROUTING -o ${nsA.hostIf}`],
    ['subUp', 2, `PREROUTING -i ${nsB.hostIf}`], ['subDown', 3, `POSTROUTING -o ${nsB.hostIf}`]];
  const relays = [];
  for (const [label, q] of dirs) {
    const r = await startRelay(label, q, links[label] || []);
    relays.push(r);
    cleanup.push(() => r.stop());
  }
  for (const [, q, where] of dirs) {
    sh(`iptables -t mangle -A ${where} -p udp -j NFQUEUE --queue-num ${q}`);
  }
  const host = nsA.hostAddr;
  const pages = await startPageServer();
  cleanup.push(() => pages.close());
  const fwd = await tcpForward(host, Number(new URL(pages.url).port));
  cleanup.push(() => fwd.close());
  // getUserMedia needs a secure context: the page's private-address origin is declared one.
  const origin = new URL(fwd.url).origin;
  const chromeArgs = [`--unsafely-treat-insecure-origin-as-secure=${origin}`];
  const pubBrowser = await chromiumIn(nsA, { args: chromeArgs });
  cleanup.push(() => pubBrowser.close());
  const subBrowser = await chromiumIn(nsB, { args: chromeArgs });
  cleanup.push(() => subBrowser.close());
  let server = null;
  let sub;
  let pubPage;
  let key;
  if (mode === 'sfu') {
    server = await startServer({
      args: [
        '--set', 'server.address=0.0.0.0',
        '--set', `server.public_host=${host}`,
        '--set', 'media.bind_address=0.0.0.0',
        '--set', `media.public_ips=["${host}"]`,
        '--set', 'turn.enabled=false',
      ],
    });
    cleanup.push(() => server.stop());
    const ov = new OpenVidu(server.url, 'MY_SECRET');
    const session = await ov.createSession({ customSessionId: 'impaired' });
    const open = async (browser, name, subscribe) => {
      const token = (await session.createConnection({ data: name })).token;
      const page = await browser.ctx.newPage();
      await page.goto(fwd.url);
      await page.evaluate((s) => { window.autoSubscribe = s; }, subscribe);
      await page.evaluate(([t, n]) => window.join(t, n), [token, name]);
      return page;
    };
    const pub = await open(pubBrowser, 'pub', false);
    sub = await open(subBrowser, 'sub', true);
    key = await pub.evaluate(() => window.publish());
    pubPage = pub;
  } else {
    // The same camera settings as the page's openvidu-browser publisher (320x240, 15 fps).
    const pub = await pubBrowser.ctx.newPage();
    await pub.goto(fwd.url);
    sub = await subBrowser.ctx.newPage();
    await sub.goto(fwd.url);
    const gathered = `(pc) => new Promise((res) => {
      if (pc.iceGatheringState === 'complete') return res();
      pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && res());
      setTimeout(res, 10000);
    })`;
    const offer = await pub.evaluate(async (g) => {
      const gatheredFn = eval(g);
      const st = await navigator.mediaDevices.getUserMedia({
        audio: true, video: { width: 320, height: 240, frameRate: 15 },
      });
      const pc = new RTCPeerConnection();
      st.getTracks().forEach((t) => pc.addTrack(t, st));
      window.pc = pc;
      await pc.setLocalDescription(await pc.createOffer());
      await gatheredFn(pc);
      return pc.localDescription.sdp;
    }, gathered);
    const answer = await sub.evaluate(async ([sdp, g]) => {
      const gatheredFn = eval(g);
      const pc = new RTCPeerConnection();
      window.pc = pc;
      pc.ontrack = (e) => {
        if (e.track.kind !== 'video') return;
        const v = document.createElement('video');
        v.autoplay = true;
        v.muted = true;
        v.srcObject = e.streams[0];
        document.body.appendChild(v);
        v.play().catch(() => {});
      };
      await pc.setRemoteDescription({ type: 'offer', sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await gatheredFn(pc);
      // window.inboundStats() (the test page's) reads every entry of window.subscribers.
      window.subscribers = { direct: { stream: { getRTCPeerConnection: () => pc } } };
      return pc.localDescription.sdp;
    }, [offer, gathered]);
    await pub.evaluate((sdp) => window.pc.setRemoteDescription({ type: 'answer', sdp }), answer);
    key = 'direct';
    pubPage = pub;
  }
  // The publisher's video outbound-rtp: frames it encoded, retransmissions it sent, NACKs it got.
  const outbound = () => pubPage.evaluate(async () => {
    const pc = window.pc || window.publisher.stream.getRTCPeerConnection();
    const r = { framesEncoded: 0, packetsSent: 0, retransmittedSent: 0, nacksReceived: 0 };
    (await pc.getStats()).forEach((s) => {
      if (s.type !== 'outbound-rtp' || s.kind !== 'video') return;
      r.framesEncoded += s.framesEncoded || 0;
      r.packetsSent += s.packetsSent || 0;
      r.retransmittedSent += s.retransmittedPacketsSent || 0;
      r.nacksReceived += s.nackCount || 0;
    });
    return r;
  });
  const stats = async () => ({ ...(await sub.evaluate(() => window.inboundStats()))[key], ...(await outbound()) });
  const start = await until(async () => {
    const st = await stats();
    return st && st.videoPackets >= warmup && st;
  }, `subscriber receives ${warmup} video packets`, { tries: 900, everyMs: 100 });
  const counters0 = server ? await serverCounters(server) : null;
  await sleep(seconds * 1000);
  const end = await stats();
  const counters1 = server ? await serverCounters(server) : null;
  const relayStats = [];
  for (const r of relays) relayStats.push(await r.stop());
  let serverDelta = null;
  if (server) {
    serverDelta = {};
    for (const k of Object.keys(counters1)) serverDelta[k] = counters1[k] - (counters0[k] || 0);
  }
  result = {
    ok: true, mode, window: seconds, links, start, end, summary: summarize(start, end),
    relays: relayStats, server: serverDelta, serverEnd: counters1,
    logs: server ? server.logs().slice(-3000) : undefined,
  };
} catch (e) {
  result = { ok: false, mode, error: String(e && e.stack || e) };
} finally {
  for (const f of cleanup.reverse()) {
    try { await f(); } catch { /* best effort */ }
  }
}
console.log(`RESULT ${JSON.stringify(result)}`);
process.exit(0);

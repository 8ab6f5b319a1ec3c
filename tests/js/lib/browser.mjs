// Headless Chromium (Debian's) driven by playwright-core, with a loopback HTTP server that
// serves a test page loading the unmodified openvidu-browser 2.32.2 bundle.
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';
import { before, after } from 'node:test';
import { startServer, until } from './server.mjs';

const require = createRequire(import.meta.url);
const bundle = path.join(
  path.dirname(require.resolve('openvidu-browser/package.json')),
  'static', 'js', 'openvidu-browser-2.32.2.js',
);

const PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>ringsfu test</title>
<script src="/openvidu-browser.js"></script></head><body><div id="videos"></div>
<script>
  window.events = [];
  window.log = (type, detail) => window.events.push({ type, detail, at: Date.now() });
  window.join = async (token, name) => {
    window.OV = new OpenVidu();
    window.OV.enableProdMode();
    const s = window.OV.initSession();
    window.session = s;
    s.on('connectionCreated', (e) => log('connectionCreated', { id: e.connection.connectionId, data: e.connection.data }));
    s.on('connectionDestroyed', (e) => log('connectionDestroyed', { id: e.connection.connectionId, reason: e.reason }));
    s.on('sessionDisconnected', (e) => log('sessionDisconnected', { reason: e.reason }));
    s.on('signal', (e) => log('signal', { type: e.type, data: e.data, from: e.from ? e.from.connectionId : null }));
    s.on('streamCreated', (e) => {
      log('streamCreated', { id: e.stream.streamId });
      if (window.autoSubscribe) {
        const sub = s.subscribe(e.stream, 'videos', { insertMode: 'APPEND' });
        window.subscribers[e.stream.streamId] = sub;
        window.subscribeStartedAt[e.stream.streamId] = Date.now();
      }
    });
    s.on('streamDestroyed', (e) => {
      log('streamDestroyed', { id: e.stream.streamId, reason: e.reason });
      delete window.subscribers[e.stream.streamId];
    });
    s.on('exception', (e) => log('exception', { name: e.name, message: e.message }));
    await Promise.race([
      s.connect(token, { clientData: name }),
      new Promise((_, rej) => setTimeout(() => rej(new Error('connect timed out')), 15000)),
    ]);
    window.joinedAt = Date.now();
    return { connectionId: s.connection.connectionId, role: s.connection.role, sessionId: s.sessionId };
  };
  window.autoSubscribe = false;
  window.subscribers = {};
  window.subscribeStartedAt = {};
  // Publishes the fake camera and microphone; resolves with the stream id.
  window.publish = async () => {
    const pub = await window.OV.initPublisherAsync(undefined, {
      publishAudio: true, publishVideo: true, resolution: '320x240', frameRate: 15,
    });
    window.publisher = pub;
    await Promise.race([
      window.session.publish(pub),
      new Promise((_, rej) => setTimeout(() => rej(new Error('publish timed out')), 15000)),
    ]);
    return pub.stream.streamId;
  };
  window.unpublish = () => window.session.unpublish(window.publisher);
  // Per subscribed stream: what RTCPeerConnection.getStats() says about the inbound tracks.
  window.inboundStats = async () => {
    const out = {};
    for (const [id, sub] of Object.entries(window.subscribers)) {
      const pc = sub.stream.getRTCPeerConnection && sub.stream.getRTCPeerConnection();
      if (!pc) continue;
      const r = { framesDecoded: 0, videoPackets: 0, videoLost: 0, nackCount: 0, audioSamples: 0,
                  audioPackets: 0, audioLost: 0, connectionState: pc.connectionState,
                  firstFrameAt: window.firstFrameAt[id] || null };
      const all = await pc.getStats();
      all.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video' && s.codecId && all.get(s.codecId)) {
          r.videoCodec = all.get(s.codecId).mimeType;
        }
        if (s.type !== 'inbound-rtp') return;
        if (s.kind === 'video') {
          r.framesDecoded += s.framesDecoded || 0;
          r.videoPackets += s.packetsReceived || 0;
          r.videoLost += s.packetsLost || 0;
          r.nackCount += s.nackCount || 0;
          r.retransmitted = (r.retransmitted || 0) + (s.retransmittedPacketsReceived || 0);
          r.pliCount = (r.pliCount || 0) + (s.pliCount || 0);
          r.freezeCount = (r.freezeCount || 0) + (s.freezeCount || 0);
          r.freezeSeconds = (r.freezeSeconds || 0) + (s.totalFreezesDuration || 0);
          r.framesDropped = (r.framesDropped || 0) + (s.framesDropped || 0);
        } else {
          r.audioSamples += s.totalSamplesReceived || 0;
          r.audioPackets += s.packetsReceived || 0;
          r.audioLost += s.packetsLost || 0;
        }
      });
      if (r.framesDecoded > 0 && !window.firstFrameAt[id]) window.firstFrameAt[id] = Date.now();
      out[id] = r;
    }
    return out;
  };
  window.firstFrameAt = {};
</script></body></html>`;

export async function startPageServer() {
  const srv = http.createServer((req, res) => {
    if (req.url === '/openvidu-browser.js') {
      res.writeHead(200, { 'Content-Type': 'application/javascript' });
      fs.createReadStream(bundle).pipe(res);
    } else {
      res.writeHead(200, { 'Content-Type': 'text/html' });
      res.end(PAGE);
    }
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${srv.address().port}/`, close: () => new Promise((r) => srv.close(r)) };
}

export const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--autoplay-policy=no-user-gesture-required',
];

export const chromiumPath = () => process.env.CHROMIUM || '/usr/bin/chromium';

/** Headless Chromium with a fresh profile; `executablePath`: a program to run instead of
 * chromiumPath() (a wrapper that execs it, for instance); `args`: flags added to
 * CHROMIUM_ARGS. Returns { ctx, close() }. */
export async function launchChromium({ executablePath = chromiumPath(), args = [] } = {}) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringsfu-chromium-'));
  const ctx = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: [...CHROMIUM_ARGS, ...args],
  }).catch((e) => {
    fs.rmSync(userDataDir, { recursive: true, force: true });
    throw e;
  });
  return {
    ctx,
    async close() {
      await ctx.close();
      fs.rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Opens a page of `browser` on the test page server `pages` and joins `session` as `name` with a
 * fresh connection's token; `subscribe`: subscribe to every stream; `initScript`: runs in the page
 * before openvidu-browser. Returns { page, connectionId, role, sessionId }.
 */
export async function joinPage(browser, pages, session, name, { subscribe = true, initScript } = {}) {
  const token = (await session.createConnection({ data: name })).token;
  const page = await browser.ctx.newPage();
  if (initScript) await page.addInitScript(initScript);
  await page.goto(pages.url);
  await page.evaluate((s) => { window.autoSubscribe = s; }, subscribe);
  const j = await page.evaluate(([t, n]) => window.join(t, n), [token, name]);
  return { page, ...j };
}

/** Waits until `page` decodes video frames and receives audio samples from `streamId`, and both
 * keep growing; returns the last sample. */
export async function mediaFlows(page, streamId, what) {
  const stats = async () => (await page.evaluate(() => window.inboundStats()))[streamId];
  const first = await until(async () => {
    const s = await stats();
    return s && s.framesDecoded > 0 && s.audioSamples > 0 && s;
  }, `${what}: first decoded frame and audio`, { tries: 300, everyMs: 100 });
  return until(async () => {
    const s = await stats();
    return s && s.framesDecoded > first.framesDecoded + 10 && s.audioSamples > first.audioSamples && s;
  }, `${what}: frames and samples keep coming`, { tries: 300, everyMs: 100 });
}

/**
 * For one test file: before its tests, starts ringsfu (`startServer(serverOpts)`), the page server
 * and Chromium; after them, stops all three. Returns an object whose `server`, `pages` and
 * `browser` are set once the `before` hook ran.
 */
export function harness(serverOpts = {}) {
  const h = {};
  before(async () => {
    h.server = await startServer(serverOpts);
    h.pages = await startPageServer();
    h.browser = await launchChromium();
  });
  after(async () => {
    await h.browser?.close();
    await h.pages?.close();
    await h.server?.stop();
  });
  return h;
}

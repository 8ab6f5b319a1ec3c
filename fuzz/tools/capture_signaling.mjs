// The JSON-RPC frames openvidu-browser 2.32.2 in headless Chromium sends to ringsfu over a whole
// call, captured from the page's WebSocket (playwright's `framesent`), as seeds for the
// `signaling` fuzz target: two participants join, A (a moderator) publishes, B subscribes,
// A signals, mutes and unmutes, B leaves, A unpublishes and disconnects.
// Usage (from tests/js, with the debug build of ringsfu): node ../../fuzz/tools/capture_signaling.mjs [out dir]
// Writes each distinct method's first two frames as chrome156_<n>_<method>.json (default out dir:
// fuzz/corpus/signaling/).
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { startServer, until, repoRoot } from '../../tests/js/lib/server.mjs';
import { startPageServer, launchChromium, mediaFlows } from '../../tests/js/lib/browser.mjs';

const require = createRequire(path.join(repoRoot, 'tests', 'js', 'package.json'));
const { OpenVidu } = require('openvidu-node-client');
const out = process.argv[2] || path.join(repoRoot, 'fuzz', 'corpus', 'signaling');
fs.mkdirSync(out, { recursive: true });

const server = await startServer();
const pages = await startPageServer();
const browser = await launchChromium();
const frames = [];
try {
  const ov = new OpenVidu(server.url, 'MY_SECRET');
  const session = await ov.createSession({ customSessionId: 'capture-room' });
  const open = async (name, role) => {
    const token = (await session.createConnection({ data: name, role })).token;
    const page = await browser.ctx.newPage();
    page.on('websocket', (ws) => ws.on('framesent', (f) => typeof f.payload === 'string' && frames.push(f.payload)));
    await page.goto(pages.url);
    await page.evaluate((s) => { window.autoSubscribe = s; }, name === 'B');
    const j = await page.evaluate(([t, n]) => window.join(t, n), [token, name]);
    return { page, ...j };
  };
  const a = await open('A', 'MODERATOR');
  const b = await open('B', 'PUBLISHER');
  const streamId = await a.page.evaluate(() => window.publish());
  await mediaFlows(b.page, streamId, 'B receives A');
  await a.page.evaluate(() => window.session.signal({ data: 'hello', type: 'chat' }));
  await b.page.evaluate((to) => window.session.signal({ data: 'to A only', to: [window.session.remoteConnections.get(to)] }), a.connectionId);
  await a.page.evaluate(() => window.publisher.publishAudio(false));
  await a.page.evaluate(() => window.publisher.publishVideo(false));
  await a.page.evaluate(() => window.publisher.publishAudio(true));
  await new Promise((r) => setTimeout(r, 500));
  await b.page.evaluate(() => window.session.disconnect());
  await a.page.evaluate(() => window.unpublish());
  await new Promise((r) => setTimeout(r, 500));
  await a.page.evaluate(() => window.session.disconnect());
  await until(async () => frames.some((f) => f.includes('"leaveRoom"')), 'leaveRoom frames');
} finally {
  await browser.close();
  await pages.close();
  await server.stop();
}
const seen = new Map();
let n = 0;
for (const f of frames) {
  let method = 'response';
  try { method = JSON.parse(f).method || 'response'; } catch { method = 'text'; }
  const k = seen.get(method) || 0;
  if (k >= 2) continue;
  seen.set(method, k + 1);
  fs.writeFileSync(path.join(out, `chrome156_${String(n++).padStart(2, '0')}_${method}.json`), f);
}
console.log(`${frames.length} frames sent, ${n} written to ${out}:`, [...seen.keys()].join(' '));

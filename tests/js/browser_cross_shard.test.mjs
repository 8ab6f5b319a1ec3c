// One session over two media shards, with openvidu-browser 2.32.2 in headless Chromium: one page
// publishes its fake camera and microphone, four other pages subscribe. With
// `media.spread_threshold = 0` every subscriber leg goes to the shard with the fewest peers, so
// the legs alternate between the shard that is not the session's home (where the publisher is)
// and the home shard. Those on the other shard get the publisher's packets only through the
// shard mesh (a mirror producer there). Every subscriber must decode video and receive audio; the
// ICE pair each browser selected tells which shard's port (`media.port_base + shard`) carries its
// leg, so subscribers on both shards are checked from the browser's side; /metrics must show the
// same split, one mirror producer on the other shard, and mesh traffic from home to there.
// tools/test.sh runs this file on the default I/O backend, then again with
// RINGSFU_IO_BACKEND=epoll (the mesh is read by both shard shells).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { startServer, until, basicAuth } from './lib/server.mjs';
import { startPageServer, launchChromium, joinPage, mediaFlows } from './lib/browser.mjs';

const require = createRequire(import.meta.url);
const { OpenVidu } = require('openvidu-node-client');

const SHARDS = 2;
const SUBSCRIBERS = 4;

let server, pages, browser;
before(async () => {
  server = await startServer({
    args: [
      '--set', `media.io_backend=${process.env.RINGSFU_IO_BACKEND || 'auto'}`,
      '--set', `media.shards=${SHARDS}`,
      '--set', 'media.spread_threshold=0',
    ],
  });
  pages = await startPageServer();
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  await pages?.close();
  await server?.stop();
});

async function scrape() {
  const r = await fetch(`${server.url}/metrics`, { headers: { Authorization: basicAuth() } });
  assert.equal(r.status, 200);
  return r.text();
}

// The value of `name{shard="i"}` (media shards only: no other label) for each shard index.
function perShard(text, name) {
  const out = new Array(SHARDS).fill(null);
  for (const line of text.split('\n')) {
    const m = line.match(/^(\w+)\{shard="(\d+)"\} (\S+)$/);
    if (m && m[1] === name && Number(m[2]) < SHARDS) out[Number(m[2])] = Number(m[3]);
  }
  return out;
}

function gauge(text, name) {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(name.length + 1)) : null;
}

const FAMILIES = {
  publishers: 'ringsfu_shard_media_publishers',
  subscribers: 'ringsfu_shard_media_subscribers',
  mirrors: 'ringsfu_shard_mirror_producers',
  meshOut: 'ringsfu_shard_mesh_out_total',
  meshIn: 'ringsfu_shard_mesh_in_total',
  rtpOut: 'ringsfu_shard_rtp_out_total',
};

async function shardMetrics() {
  const text = await scrape();
  const m = {
    shards: gauge(text, 'ringsfu_shards'),
    backends: [...text.matchAll(/^ringsfu_shard_info\{shard="\d+",io_backend="(\w+)"/gm)].map((x) => x[1]),
  };
  for (const [k, name] of Object.entries(FAMILIES)) m[k] = perShard(text, name);
  return m;
}

// The server port of the selected ICE candidate pair of the publisher's peer connection
// (`publisher: true`) or of each subscribed stream's peer connection, once connected.
function remotePorts(page, publisher) {
  return page.evaluate(async (pub) => {
    const pcs = pub
      ? [window.publisher.stream.getRTCPeerConnection()]
      : Object.values(window.subscribers).map((s) => s.stream.getRTCPeerConnection());
    const ports = [];
    for (const pc of pcs) {
      if (!pc || pc.connectionState !== 'connected') return null;
      const st = await pc.getStats();
      let port = null;
      st.forEach((t) => {
        if (t.type !== 'transport' || !t.selectedCandidatePairId) return;
        const pair = st.get(t.selectedCandidatePairId);
        const remote = pair && st.get(pair.remoteCandidateId);
        if (remote) port = remote.port;
      });
      if (port === null) return null;
      ports.push(port);
    }
    return ports;
  }, publisher);
}

const events = (page, type) => page.evaluate((t) => window.events.filter((e) => e.type === t), type);

async function crossShard() {
  const started = Date.now();
  const at = () => `[+${Date.now() - started} ms]`;
  const ov = new OpenVidu(server.url, 'MY_SECRET');
  const session = await ov.createSession({ customSessionId: 'cross-shard-room' });
  const pub = await joinPage(browser, pages, session, 'publisher', { subscribe: false });
  const streamId = await pub.page.evaluate(() => window.publish());
  assert.match(streamId, /^str_CAM_/);

  // The publisher's shard (the session's home) from its selected pair (/metrics is checked below).
  const [pubPort] = await until(() => remotePorts(pub.page, true), 'publisher ICE pair selected',
    { tries: 150, everyMs: 100 });
  const home = pubPort - server.mediaPort;
  assert.ok(home >= 0 && home < SHARDS, `publisher on port ${pubPort}, media ports from ${server.mediaPort}`);
  const other = 1 - home;

  // Joined one after the other: each leg is placed with the previous ones counted.
  const subs = [];
  for (let i = 0; i < SUBSCRIBERS; i++) {
    const s = await joinPage(browser, pages, session, `sub${i + 1}`);
    await until(async () => (await events(s.page, 'streamCreated')).find((e) => e.detail.id === streamId),
      `sub${i + 1} sees the stream`, { tries: 150, everyMs: 100 });
    subs.push(s);
  }

  // Every subscriber decodes video and receives audio, and both keep growing.
  for (const [i, s] of subs.entries()) {
    const st = await mediaFlows(s.page, streamId, `sub${i + 1}`);
    assert.equal(st.connectionState, 'connected');
    console.log(`${at()} sub${i + 1}: ${JSON.stringify(st)}`);
  }

  // Which shard each subscriber's leg is on, seen from the browser: both shards carry some.
  const shardOf = [];
  for (const [i, s] of subs.entries()) {
    const ports = await until(() => remotePorts(s.page, false), `sub${i + 1} ICE pair selected`,
      { tries: 150, everyMs: 100 });
    assert.equal(ports.length, 1, `sub${i + 1} has one subscription: ${ports}`);
    shardOf.push(ports[0] - server.mediaPort);
  }
  console.log(`${at()} home shard ${home}; subscriber legs on shards ${JSON.stringify(shardOf)}`);
  for (const [i, sh] of shardOf.entries()) assert.ok(sh === 0 || sh === 1, `sub${i + 1} on port offset ${sh}`);
  assert.ok(shardOf.includes(home), `a subscriber on the home shard ${home}: ${shardOf}`);
  assert.ok(shardOf.includes(other), `a subscriber on the other shard ${other}: ${shardOf}`);

  // /metrics agrees (the shard gauges are refreshed by the shards' loops: polled, bounded).
  let m;
  try {
    m = await until(async () => {
      const x = await shardMetrics();
      const ok = x.publishers[home] === 1
        && x.subscribers[0] > 0 && x.subscribers[1] > 0
        && x.subscribers[0] + x.subscribers[1] === SUBSCRIBERS
        && x.mirrors[other] === 1
        && x.meshIn[other] > 0 && x.meshOut[home] > 0;
      return ok && x;
    }, 'per-shard metrics of a session spread over both shards', { tries: 100, everyMs: 100 });
  } catch (e) {
    console.log(`last metrics: ${JSON.stringify(await shardMetrics())}`);
    throw e;
  }
  console.log(`${at()} metrics: ${JSON.stringify(m)}`);
  assert.equal(m.shards, SHARDS);
  if (process.env.RINGSFU_IO_BACKEND) {
    assert.deepEqual(m.backends, new Array(SHARDS).fill(process.env.RINGSFU_IO_BACKEND));
  }
  assert.deepEqual(m.publishers, home === 0 ? [1, 0] : [0, 1]);
  assert.equal(m.subscribers[other], shardOf.filter((s) => s === other).length);
  assert.equal(m.subscribers[home], shardOf.filter((s) => s === home).length);
  assert.equal(m.mirrors[home], 0, 'no mirror on the home shard');
  assert.equal(m.mirrors[other], 1, 'one mirror producer on the other shard');
  assert.ok(m.meshOut[home] > 0, `home shard mesh_out ${m.meshOut[home]}`);
  assert.ok(m.meshIn[other] > 0, `other shard mesh_in ${m.meshIn[other]}`);

  // The mesh keeps carrying the publisher's packets while the subscribers watch.
  const later = await until(async () => {
    const x = await shardMetrics();
    return x.meshIn[other] > m.meshIn[other] + 50 && x.meshOut[home] > m.meshOut[home] + 50 && x;
  }, 'mesh counters keep growing', { tries: 100, everyMs: 100 });
  console.log(`${at()} mesh later: out[home] ${later.meshOut[home]}, in[other] ${later.meshIn[other]}; `
    + `rtp_out ${JSON.stringify(later.rtpOut)}`);
  assert.ok(later.rtpOut[other] > 0, 'the other shard sends RTP to its subscribers');

  // Every page leaves the session (leaveRoom: no reconnection window to wait out).
  for (const p of [pub, ...subs]) {
    assert.deepEqual(await events(p.page, 'exception'), []);
    await p.page.evaluate(() => window.session.disconnect());
  }
  console.log(`${at()} pages left the session`);

  // With every subscriber gone the other shard's mirror detaches.
  const gone = await until(async () => {
    const x = await shardMetrics();
    return x.mirrors[other] === 0 && x.subscribers[0] + x.subscribers[1] === 0 && x;
  }, 'mirror producer and subscribers gone after the pages left', { tries: 150, everyMs: 100 });
  console.log(`${at()} after leaving: ${JSON.stringify(gone)}`);
  for (const p of [pub, ...subs]) await p.page.close();
  console.log(`test body took ${Date.now() - started} ms`);
}

test('one publisher, four subscribers over two shards: every subscriber decodes, the other shard through the mesh', async () => {
  try {
    await crossShard();
  } catch (e) {
    console.log(`ringsfu log:\n${server.logs()}`);
    throw e;
  }
});

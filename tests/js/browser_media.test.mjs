// openvidu-browser 2.32.2 in headless Chromium publishes its fake camera and microphone through
// ringsfu; other pages subscribe and decode. Media crosses the real ICE-lite, DTLS-SRTP and
// forwarding path of the binary.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { startServer, until } from './lib/server.mjs';
import { startPageServer, launchChromium, joinPage, mediaFlows } from './lib/browser.mjs';

const require = createRequire(import.meta.url);
const { OpenVidu } = require('openvidu-node-client');

let server, pages, browser;
before(async () => {
  // tools/test.sh runs this file twice: the default (auto backend, one shard), then epoll with
  // two shards, where the codec test's three sessions spread over both shards.
  server = await startServer({
    args: [
      '--set', `media.io_backend=${process.env.RINGSFU_IO_BACKEND || 'auto'}`,
      '--set', `media.shards=${process.env.RINGSFU_SHARDS || '1'}`,
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

const events = (page, type) => page.evaluate((t) => window.events.filter((e) => e.type === t), type);

const join = (session, name, opts) => joinPage(browser, pages, session, name, opts);

test('one publisher, one subscriber: video decoded, audio received, then unpublished', async () => {
  const ov = new OpenVidu(server.url, 'MY_SECRET');
  const session = await ov.createSession({ customSessionId: 'media-room' });
  const a = await join(session, 'Alice', { subscribe: false });
  const streamId = await a.page.evaluate(() => window.publish());
  // Bob joins a session where Alice already publishes: joinRoom -> subscribe -> first frame.
  const b = await join(session, 'Bob');
  assert.match(streamId, /^str_CAM_/);
  await until(async () => (await events(b.page, 'streamCreated')).find((e) => e.detail.id === streamId), 'B sees the stream');
  const s = await mediaFlows(b.page, streamId, 'B');
  assert.equal(s.videoCodec, 'video/VP8', 'MEDIA_SERVER_PREFERRED picks VP8');
  assert.equal(s.connectionState, 'connected');
  const joinToFrame = await b.page.evaluate((id) => window.firstFrameAt[id] - window.joinedAt, streamId);
  console.log(`join-to-first-decoded-frame: ${joinToFrame} ms; stats ${JSON.stringify(s)}`);

  // The REST API shows the publisher and the subscription.
  await session.fetch();
  const pubConn = session.activeConnections.find((c) => c.connectionId === a.connectionId);
  assert.equal(pubConn.publishers.length, 1);
  const subConn = session.activeConnections.find((c) => c.connectionId === b.connectionId);
  assert.equal(subConn.subscribers.length, 1);

  await a.page.evaluate(() => window.unpublish());
  const gone = await until(async () => (await events(b.page, 'streamDestroyed')).find((e) => e.detail.id === streamId), 'B sees the stream go');
  assert.equal(gone.detail.reason, 'unpublish');
  for (const p of [a.page, b.page]) {
    assert.deepEqual(await events(p, 'exception'), []);
    await p.close();
  }
});

test('forcedVideoCodec: VP9, H264 and AV1 sessions carry that codec end to end', async () => {
  const ov = new OpenVidu(server.url, 'MY_SECRET');
  for (const codec of ['VP9', 'H264', 'AV1']) {
    const session = await ov.createSession({ customSessionId: `codec-${codec}`, forcedVideoCodec: codec });
    const a = await join(session, 'pub', { subscribe: false });
    const canPublish = await a.page.evaluate(async (c) => {
      const caps = RTCRtpSender.getCapabilities('video').codecs.map((x) => x.mimeType.toUpperCase());
      return caps.includes(`VIDEO/${c}`);
    }, codec);
    if (!canPublish) {
      console.log(`this Chromium cannot encode ${codec}; skipped`);
      await a.page.close();
      continue;
    }
    const b = await join(session, 'sub');
    const streamId = await a.page.evaluate(() => window.publish());
    const s = await mediaFlows(b.page, streamId, `${codec} subscriber`);
    assert.equal(s.videoCodec, `video/${codec}`);
    console.log(`${codec}: ${s.framesDecoded} frames decoded`);
    await a.page.close();
    await b.page.close();
  }
});

test('three participants publish and subscribe to each other', async () => {
  const ov = new OpenVidu(server.url, 'MY_SECRET');
  const session = await ov.createSession({ customSessionId: 'media-mesh' });
  const ps = [];
  for (const n of ['P1', 'P2', 'P3']) ps.push(await join(session, n));
  const ids = [];
  for (const p of ps) ids.push(await p.page.evaluate(() => window.publish()));
  for (const [i, p] of ps.entries()) {
    for (const [k, id] of ids.entries()) {
      if (k === i) continue;
      await mediaFlows(p.page, id, `${i + 1} receives ${k + 1}`);
    }
  }
  for (const p of ps) {
    assert.deepEqual(await events(p.page, 'exception'), []);
    await p.page.close();
  }
});

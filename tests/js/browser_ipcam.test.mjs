// IP cameras end to end: a real RTSP server on loopback (GStreamer's, tests/js/lib/rtsp_camera.py,
// serving H.264 Constrained Baseline + PCMU it generates) is published as an IPCAM connection
// through openvidu-node-client; openvidu-browser 2.32.2 in headless Chromium subscribes and
// decodes. onlyPlayWithSubscribers is observed at the RTSP server (its sessions), the camera is
// killed and restarted under a subscriber, AAC audio is dropped with a note, and the camera's
// stream is recorded INDIVIDUAL and checked with ffprobe (video; the recorder writes Opus audio
// only).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { startServer, until, basicAuth } from './lib/server.mjs';
import { startPageServer, launchChromium, joinPage } from './lib/browser.mjs';
import { startCamera } from './lib/rtsp_camera.mjs';
import { startWebhookReceiver, fetchAndUnzip, ffprobe } from './lib/recording.mjs';

const require = createRequire(import.meta.url);
const { OpenVidu, Recording } = require('openvidu-node-client');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let server, ov, pages, browser, hooks;
const cameras = [];
const recDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringsfu-js-ipcam-'));

before(async () => {
  hooks = await startWebhookReceiver();
  server = await startServer({
    args: [
      '--set', `media.io_backend=${process.env.RINGSFU_IO_BACKEND || 'auto'}`,
      '--set', `media.shards=${process.env.RINGSFU_SHARDS || '1'}`,
      '--set', `recording.path=${recDir}`,
      '--set', 'webhook.enabled=true', '--set', `webhook.endpoint=${hooks.url}`,
    ],
  });
  ov = new OpenVidu(server.url, 'MY_SECRET');
  pages = await startPageServer();
  browser = await launchChromium();
});
after(async () => {
  for (const c of cameras) await c.stop();
  await browser?.close();
  await pages?.close();
  await server?.stop();
  await hooks?.close();
  fs.rmSync(recDir, { recursive: true, force: true });
});

async function camera(opts) {
  const c = await startCamera(opts);
  cameras.push(c);
  return c;
}

const events = (page, type) => page.evaluate((t) => window.events.filter((e) => e.type === t), type);
const join = (session, name, opts) => joinPage(browser, pages, session, name, opts);

/** The connection's JSON from the REST API. */
async function connectionJson(sessionId, connectionId) {
  const r = await fetch(`${server.url}/openvidu/api/sessions/${sessionId}/connection/${connectionId}`, {
    headers: { Authorization: basicAuth() },
  });
  assert.equal(r.status, 200);
  return r.json();
}

const ipcamState = async (sid, cid) => (await connectionJson(sid, cid)).ipcam?.state;

/** The stream of the camera `cid` as `page` saw it created (the newest, after `after` ones). */
async function cameraStream(page, cid, after = 0) {
  return until(async () => {
    const created = (await events(page, 'streamCreated')).filter((e) => e.detail.id.endsWith(`_${cid}`));
    return created.length > after && created[created.length - 1].detail.id;
  }, `the camera's stream #${after + 1} created in the page`, { tries: 300, everyMs: 100 });
}

/** Waits until `page` decodes video (and, when `audio`, receives audio) from `streamId`, both
 * growing; returns the last inbound stats. */
async function cameraFlows(page, streamId, what, { audio = true } = {}) {
  const stats = async () => (await page.evaluate(() => window.inboundStats()))[streamId];
  const first = await until(async () => {
    const s = await stats();
    return s && s.framesDecoded > 0 && (!audio || s.audioSamples > 0) && s;
  }, `${what}: first decoded frame${audio ? ' and audio' : ''}`, { tries: 300, everyMs: 100 });
  return until(async () => {
    const s = await stats();
    return s && s.framesDecoded > first.framesDecoded + 10 && (!audio || s.audioSamples > first.audioSamples) && s;
  }, `${what}: frames keep coming`, { tries: 300, everyMs: 100 });
}

test('onlyPlayWithSubscribers: no RTSP session before the first subscriber, Chromium decodes H.264 and PCMU, none after the last leaves', async () => {
  const cam = await camera();
  const session = await ov.createSession({ customSessionId: 'ipcam-play' });
  const conn = await session.createConnection({
    type: 'IPCAM', rtspUri: cam.uri, onlyPlayWithSubscribers: true, data: 'lobby camera',
  });
  assert.equal(conn.connectionProperties.type, 'IPCAM');
  const sid = session.sessionId;
  // DESCRIBE only: the camera is known, nothing plays.
  await until(async () => (await ipcamState(sid, conn.connectionId)) === 'waitingForSubscribers',
    'the camera waiting for subscribers', { tries: 200, everyMs: 100 });
  const json = await connectionJson(sid, conn.connectionId);
  assert.match(json.ipcam.video, /^H264 Constrained Baseline \(profile-level-id 42e0/);
  assert.equal(json.ipcam.audio, 'PCMU/8000');
  assert.deepEqual(json.ipcam.notes, []);
  assert.equal(json.serverData, 'lobby camera');
  await sleep(1000);
  assert.equal(cam.sessionsStarted(), 0, `no RTSP session without subscribers:\n${cam.lines()}`);

  const b = await join(session, 'viewer');
  const streamId = await cameraStream(b.page, conn.connectionId);
  assert.match(streamId, /^str_IPC_/);
  const s = await cameraFlows(b.page, streamId, 'viewer');
  assert.equal(s.videoCodec, 'video/H264');
  assert.equal(s.connectionState, 'connected');
  assert.equal(cam.sessionsStarted(), 1, cam.lines());
  assert.equal(await ipcamState(sid, conn.connectionId), 'playing');
  console.log(`camera decoded: ${JSON.stringify(s)}`);

  // The last subscriber leaves: the RTSP session ends.
  await b.page.evaluate((id) => window.session.unsubscribe(window.subscribers[id]), streamId);
  await until(() => cam.sessionsEnded() === cam.sessionsStarted(), 'the RTSP session torn down',
    { tries: 100, everyMs: 100 }).catch((e) => { throw new Error(`${e.message}; the camera said:\n${cam.lines()}`); });
  await until(async () => (await ipcamState(sid, conn.connectionId)) === 'waitingForSubscribers',
    'the camera waiting again');
  await sleep(1000);
  assert.equal(cam.sessionsStarted(), cam.sessionsEnded(), `no RTSP session left:\n${cam.lines()}`);

  // Webhooks: the camera joined and its stream went OUTBOUND.
  const created = hooks.events.filter((e) => e.event === 'webrtcConnectionCreated' && e.connectionId === conn.connectionId);
  assert.equal(created.length, 1, JSON.stringify(hooks.events));
  assert.deepEqual(await events(b.page, 'exception'), []);
  await b.page.close();
  await session.close();
});

test('a camera killed and restarted mid-stream: the stream is unpublished (networkDisconnect), the connection stays, subscribers recover', async () => {
  const cam = await camera();
  const session = await ov.createSession({ customSessionId: 'ipcam-restart' });
  const conn = await session.createConnection({ type: 'IPCAM', rtspUri: cam.uri, onlyPlayWithSubscribers: false });
  const sid = session.sessionId;
  await until(async () => (await ipcamState(sid, conn.connectionId)) === 'playing', 'playing without subscribers',
    { tries: 200, everyMs: 100 });
  assert.equal(cam.sessionsStarted(), 1, 'onlyPlayWithSubscribers=false plays at once');
  const b = await join(session, 'viewer');
  const first = await cameraStream(b.page, conn.connectionId);
  await cameraFlows(b.page, first, 'before the restart');

  await cam.kill();
  const gone = await until(async () => (await events(b.page, 'streamDestroyed')).find((e) => e.detail.id === first),
    'the stream destroyed in the page', { tries: 300, everyMs: 100 });
  assert.equal(gone.detail.reason, 'networkDisconnect');
  const during = await connectionJson(sid, conn.connectionId);
  assert.equal(during.status, 'active', 'the connection stays');
  assert.ok(['retrying', 'connecting'].includes(during.ipcam.state), JSON.stringify(during.ipcam));
  assert.equal(during.publishers.length, 0);
  const destroyed = hooks.events.find((e) => e.event === 'webrtcConnectionDestroyed' && e.streamId === first);
  assert.equal(destroyed?.reason, 'networkDisconnect', JSON.stringify(hooks.events));

  const again = await camera({ port: cam.port });
  const second = await cameraStream(b.page, conn.connectionId, 1);
  assert.notEqual(second, first);
  const s = await cameraFlows(b.page, second, 'after the restart');
  console.log(`recovered: ${JSON.stringify(s)}`);
  const back = await connectionJson(sid, conn.connectionId);
  assert.equal(back.publishers.length, 1);
  assert.equal(back.ipcam.state, 'playing');
  assert.ok(again.sessionsStarted() >= 1);
  await b.page.close();
  await session.close();
});

test('a camera that never answers: retried with back-off, unpublished, REST shows why', async () => {
  const session = await ov.createSession({ customSessionId: 'ipcam-dead' });
  // A port nothing listens on (the camera helper picks free ones).
  const dead = await startCamera();
  await dead.kill();
  const conn = await session.createConnection({ type: 'IPCAM', rtspUri: dead.uri });
  const sid = session.sessionId;
  const j = await until(async () => {
    const v = await connectionJson(sid, conn.connectionId);
    return v.ipcam?.failures >= 2 && v;
  }, 'two failed attempts', { tries: 100, everyMs: 100 });
  assert.equal(j.status, 'active');
  assert.equal(j.publishers.length, 0, 'the stream is unpublished');
  assert.match(j.ipcam.lastError, /DESCRIBE/);
  await session.close();
});

test('AAC audio is dropped with a note; the H.264 video still plays', async () => {
  const cam = await camera({ args: ['--audio', 'aac'] });
  const session = await ov.createSession({ customSessionId: 'ipcam-aac' });
  const conn = await session.createConnection({ type: 'IPCAM', rtspUri: cam.uri, onlyPlayWithSubscribers: false });
  const sid = session.sessionId;
  const j = await until(async () => {
    const v = await connectionJson(sid, conn.connectionId);
    return v.ipcam?.state === 'playing' && v;
  }, 'playing', { tries: 200, everyMs: 100 });
  assert.equal(j.ipcam.audio, null);
  assert.ok(j.ipcam.notes.some((n) => /AAC/.test(n)), JSON.stringify(j.ipcam));
  const b = await join(session, 'viewer');
  const streamId = await cameraStream(b.page, conn.connectionId);
  await cameraFlows(b.page, streamId, 'video only', { audio: false });
  assert.match(server.logs(), /AAC/);
  await b.page.close();
  await session.close();
});

test('a High profile camera is named in the connection JSON and the log', async () => {
  const cam = await camera({ args: ['--profile', 'high'] });
  const session = await ov.createSession({ customSessionId: 'ipcam-high' });
  const conn = await session.createConnection({ type: 'IPCAM', rtspUri: cam.uri });
  const j = await until(async () => {
    const v = await connectionJson(session.sessionId, conn.connectionId);
    return v.ipcam?.state === 'waitingForSubscribers' && v;
  }, 'described', { tries: 200, everyMs: 100 });
  assert.match(j.ipcam.video, /^H264 High \(profile-level-id 6400/);
  assert.ok(j.ipcam.notes.some((n) => /H\.264 High/.test(n)), JSON.stringify(j.ipcam));
  assert.match(server.logs(), /H\.264 High/);
  // Whether this Chromium gets the video depends on its H.264 decoders (its offer's profiles).
  const b = await join(session, 'viewer');
  const streamId = await cameraStream(b.page, conn.connectionId);
  const high = await b.page.evaluate(() => RTCRtpReceiver.getCapabilities('video').codecs
    .some((c) => /profile-level-id=64/.test(c.sdpFmtpLine || '')));
  if (high) {
    await cameraFlows(b.page, streamId, 'High profile video');
  } else {
    // The answer rejects the video m-line: the audio still plays.
    const s = await until(async () => {
      const st = (await b.page.evaluate(() => window.inboundStats()))[streamId];
      return st && st.audioSamples > 0 && st;
    }, 'the camera\'s audio without its video', { tries: 300, everyMs: 100 });
    assert.equal(s.framesDecoded, 0);
  }
  console.log(`this Chromium ${high ? 'decodes' : 'does not offer'} H.264 High`);
  await b.page.close();
  await session.close();
});

test('an IP camera recorded INDIVIDUAL: ffprobe reads its H.264 file', async () => {
  const cam = await camera();
  const sid = 'ipcam-rec';
  const session = await ov.createSession({ customSessionId: sid });
  const conn = await session.createConnection({ type: 'IPCAM', rtspUri: cam.uri, onlyPlayWithSubscribers: false });
  await until(async () => (await ipcamState(sid, conn.connectionId)) === 'playing', 'playing',
    { tries: 200, everyMs: 100 });
  const rec = await ov.startRecording(sid, { outputMode: Recording.OutputMode.INDIVIDUAL, name: 'cam' });
  assert.equal(rec.status, 'started');
  await sleep(4000);
  await ov.stopRecording(rec.id);
  const ready = await until(async () => {
    const r = await ov.getRecording(rec.id);
    if (r.status === 'failed') throw new Error(`recording failed:\n${server.logs()}`);
    return r.status === 'ready' && r;
  }, 'the recording ready', { tries: 100, everyMs: 100 });
  const zip = await fetchAndUnzip(server.url, ready.id, ready.properties.name);
  try {
    const media = Object.keys(zip.entries).filter((n) => !n.endsWith('.json'));
    const json = JSON.parse(fs.readFileSync(path.join(zip.dir, `${ready.properties.name}.json`), 'utf8'));
    assert.deepEqual(json.files.map((f) => f.connectionId), [conn.connectionId]);
    assert.equal(media.length, 1, JSON.stringify(zip.entries));
    const p = ffprobe(path.join(zip.dir, media[0]));
    console.log(`recorded ${media[0]}: video ${p.video?.codec_name} ${p.video?.width}x${p.video?.height} ` +
      `${p.video?.nb_read_frames} frames, audio ${p.audio?.codec_name}, ${p.duration} s`);
    assert.equal(p.video?.codec_name, 'h264');
    assert.equal(p.video?.width, 320);
    assert.ok(Number(p.video?.nb_read_frames) > 15, 'frames in the file');
    // The recorder writes Opus audio only (what browsers publish): the camera's PCMU is not
    // in the file (see README "IP cameras").
    assert.ok(p.duration > 1, `duration ${p.duration}`);
  } finally {
    zip.remove();
  }
  await session.close();
});

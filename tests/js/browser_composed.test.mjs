// COMPOSED recordings of real Chromium publishers (openvidu-browser 2.32.2, fake camera and
// microphone) through ringsfu-composer (GStreamer; built with `--features composer` next to the
// ringsfu binary under test): two publishers in a BEST_FIT grid, the mp4 fetched from
// /openvidu/recordings and read by ffprobe (h264 + aac, the requested resolution and frame rate,
// duration within 5% of the time between the start and stop calls), the `<id>.jpg` thumbnail
// decoded by ffmpeg; audio-only gives webm/opus; a composer killed mid-recording fails the
// recording with the reason in the webhook while the session's media keeps flowing; a CUSTOM
// layout is refused with 422 naming what is missing.
// Needs ffprobe/ffmpeg (tools/test.sh installs them) and the composer; skipped without it unless
// RINGSFU_REQUIRE_TOOLS is set.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { execFileSync, spawnSync } from 'node:child_process';
import { startServer, until, ringsfuBin, basicAuth } from './lib/server.mjs';
import { startPageServer, launchChromium, joinPage, mediaFlows } from './lib/browser.mjs';
import { startWebhookReceiver, ffprobe } from './lib/recording.mjs';

const require = createRequire(import.meta.url);
const { OpenVidu, Recording } = require('openvidu-node-client');

const RECORD_MS = 12000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const composerBin = path.join(path.dirname(ringsfuBin()), 'ringsfu-composer');
const haveComposer = fs.existsSync(composerBin);

let server, ov, pages, browser, hooks;
const recDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringsfu-js-composed-'));

before(async () => {
  if (!haveComposer) return;
  hooks = await startWebhookReceiver();
  server = await startServer({
    args: [
      '--set', `recording.path=${recDir}`,
      '--set', 'webhook.enabled=true', '--set', `webhook.endpoint=${hooks.url}`,
    ],
  });
  ov = new OpenVidu(server.url, 'MY_SECRET');
  pages = await startPageServer();
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  await pages?.close();
  const exit = await server?.stop();
  await hooks?.close();
  fs.rmSync(recDir, { recursive: true, force: true });
  if (server) assert.equal(exit?.code, 0, `ringsfu exits cleanly on SIGTERM:\n${server?.logs()}`);
});

function skipWithout(t) {
  if (haveComposer) return false;
  if (process.env.RINGSFU_REQUIRE_TOOLS) assert.fail(`${composerBin} is missing (cargo build --features composer)`);
  t.skip(`no ${composerBin} (cargo build --features composer)`);
  return true;
}

/** A page publishing the fake camera (320x240, 30 fps) and microphone into `session`. */
async function publisherPage(session, name, { video = true } = {}) {
  const p = await joinPage(browser, pages, session, name, { subscribe: false });
  p.streamId = await p.page.evaluate(async (v) => {
    const pub = await window.OV.initPublisherAsync(undefined, {
      publishAudio: true, publishVideo: v, videoSource: v ? undefined : false,
      resolution: '320x240', frameRate: 30,
    });
    window.publisher = pub;
    await window.session.publish(pub);
    return pub.stream.streamId;
  }, video);
  return p;
}

async function settled(id) {
  return until(async () => {
    const r = await ov.getRecording(id);
    return (r.status === 'ready' || r.status === 'failed') && r;
  }, `recording ${id} ready or failed`, { tries: 600, everyMs: 100 });
}

/** GETs a recording file (Basic auth) into a temporary file; returns its path. */
async function fetchFile(id, file) {
  const r = await fetch(`${server.url}/openvidu/recordings/${id}/${file}`, { headers: { Authorization: basicAuth() } });
  assert.equal(r.status, 200, `GET ${id}/${file}`);
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ringsfu-js-cfile-')), file);
  fs.writeFileSync(out, Buffer.from(await r.arrayBuffer()));
  return out;
}

const frac = (s) => { const [a, b] = String(s).split('/').map(Number); return b ? a / b : a; };

async function composedOnce(codec) {
  const sid = `composed-${codec.toLowerCase()}`;
  const session = await ov.createSession({ customSessionId: sid, forcedVideoCodec: codec, allowTranscoding: false });
  const a = await publisherPage(session, `a-${codec}`);
  const b = await publisherPage(session, `b-${codec}`);
  const watcher = await joinPage(browser, pages, session, `w-${codec}`);
  await mediaFlows(watcher.page, a.streamId, 'watcher gets a');
  await mediaFlows(watcher.page, b.streamId, 'watcher gets b');
  const t0 = Date.now();
  const rec = await ov.startRecording(sid, {
    outputMode: Recording.OutputMode.COMPOSED, name: `grid-${codec}`, resolution: '640x360', frameRate: 20,
  });
  assert.equal(rec.status, 'started');
  await sleep(RECORD_MS);
  const stopped = await ov.stopRecording(rec.id).catch((e) => {
    throw new Error(`stop: ${e.message}\n${server.logs().slice(-6000)}`);
  });
  const wall = (Date.now() - t0) / 1000;
  assert.equal(stopped.status, 'stopped');
  const done = await settled(rec.id);
  assert.equal(done.status, 'ready', `recording ready:\n${server.logs().slice(-4000)}`);
  assert.match(done.url, new RegExp(`/openvidu/recordings/${rec.id}/grid-${codec}\\.mp4$`));
  const mp4 = await fetchFile(rec.id, `grid-${codec}.mp4`);
  const p = ffprobe(mp4);
  console.log(`${codec}: ${JSON.stringify({ v: p.video?.codec_name, a: p.audio?.codec_name, w: p.video?.width, h: p.video?.height, r: p.video?.avg_frame_rate, frames: p.video?.nb_read_frames, d: p.duration, wall, size: done.size, recDuration: done.duration })}`);
  assert.equal(p.video?.codec_name, 'h264');
  assert.equal(p.audio?.codec_name, 'aac');
  assert.equal(p.video.width, 640);
  assert.equal(p.video.height, 360);
  assert.ok(Math.abs(frac(p.video.avg_frame_rate) - 20) <= 0.5, `frame rate ${p.video.avg_frame_rate}`);
  assert.ok(Math.abs(p.duration - wall) <= 0.05 * wall, `duration ${p.duration} s vs wall ${wall} s`);
  assert.equal(done.size, fs.statSync(mp4).size, 'Recording.size is the file size');
  assert.ok(Math.abs(done.duration - p.duration) <= 0.5, `Recording.duration ${done.duration} vs ${p.duration}`);
  // The grid holds both publishers: the fake camera's frames are not black on either half.
  const luma = execFileSync('ffmpeg', ['-v', 'error', '-ss', String(p.duration / 2), '-i', mp4, '-frames:v', '1',
    '-vf', 'scale=4:1,format=gray', '-f', 'rawvideo', '-']);
  assert.ok(luma[0] + luma[1] > 20 && luma[2] + luma[3] > 20, `both halves of the grid show video: ${[...luma]}\n` +
    server.logs().split('\n').filter((l) => l.includes('composer')).join('\n'));
  const jpg = await fetchFile(rec.id, `${rec.id}.jpg`);
  const j = ffprobe(jpg);
  assert.equal(j.video?.codec_name, 'mjpeg');
  assert.equal(j.video.width, 480);
  assert.equal(j.video.height, 270);
  fs.rmSync(path.dirname(mp4), { recursive: true, force: true });
  fs.rmSync(path.dirname(jpg), { recursive: true, force: true });
  const hook = hooks.events.filter((e) => e.event === 'recordingStatusChanged' && e.id === rec.id).map((e) => e.status);
  assert.deepEqual(hook, ['started', 'stopped', 'ready']);
  for (const p of [a, b, watcher]) await p.page.close();
  await ov.deleteRecording(rec.id);
  await session.close();
}

test('two VP8 publishers recorded COMPOSED: mp4 h264+aac at the asked size and rate, thumbnail', async (t) => {
  if (skipWithout(t)) return;
  await composedOnce('VP8');
});

test('two H.264 publishers recorded COMPOSED', async (t) => {
  if (skipWithout(t)) return;
  const probe = await browser.ctx.newPage();
  await probe.goto(pages.url);
  const canH264 = await probe.evaluate(() => RTCRtpSender.getCapabilities('video').codecs.some((c) => c.mimeType.toUpperCase() === 'VIDEO/H264'));
  await probe.close();
  if (!canH264) {
    t.skip('this Chromium cannot encode H.264');
    return;
  }
  await composedOnce('H264');
});

/** Mean luma of the 8 columns of the frame at `at` seconds of `file` (grey, 8x1 pixels). */
function columns(file, at) {
  return [...execFileSync('ffmpeg', ['-v', 'error', '-ss', String(at), '-i', file, '-frames:v', '1',
    '-vf', 'scale=8:1,format=gray', '-f', 'rawvideo', '-'])];
}

test('streams joining and leaving mid-recording re-lay the grid', async (t) => {
  if (skipWithout(t)) return;
  const sid = 'composed-relayout';
  const session = await ov.createSession({ customSessionId: sid });
  const a = await publisherPage(session, 'lay-a');
  await sleep(1000);
  const t0 = Date.now();
  const rec = await ov.startRecording(sid, { outputMode: Recording.OutputMode.COMPOSED, name: 'relayout', resolution: '640x360' });
  await sleep(5000);
  const tJoin = (Date.now() - t0) / 1000;
  const b = await publisherPage(session, 'lay-b');
  await sleep(6000);
  const tLeave = (Date.now() - t0) / 1000;
  await b.page.evaluate(() => window.session.unpublish(window.publisher));
  await sleep(5000);
  await ov.stopRecording(rec.id);
  const done = await settled(rec.id);
  assert.equal(done.status, 'ready', server.logs().slice(-4000));
  const mp4 = await fetchFile(rec.id, 'relayout.mp4');
  // One 4:3 camera in 640x360 leaves black pillars left and right (the first and last columns);
  // two side by side fill the width (each 320x360 tile letterboxed top and bottom).
  const one = columns(mp4, tJoin / 2);
  const two = columns(mp4, tJoin + (tLeave - tJoin) * 0.7);
  const again = columns(mp4, tLeave + 3.5);
  console.log(`relayout: one ${one} two ${two} again ${again} (join ${tJoin} s, leave ${tLeave} s)`);
  const black = (c) => c[0] < 30 && c[7] < 30;
  assert.ok(black(one) && one[3] > 30, `one publisher, pillarboxed: ${one}`);
  assert.ok(!black(two) && two[0] > 30 && two[7] > 30, `two publishers fill the width: ${two}`);
  assert.ok(black(again) && again[3] > 30, `back to one after the second left: ${again}`);
  fs.rmSync(path.dirname(mp4), { recursive: true, force: true });
  await a.page.close();
  await b.page.close();
  await ov.deleteRecording(rec.id);
  await session.close();
});

test('audio-only COMPOSED gives a webm with Opus', async (t) => {
  if (skipWithout(t)) return;
  const sid = 'composed-audio';
  const session = await ov.createSession({ customSessionId: sid });
  const a = await publisherPage(session, 'audio-a');
  const b = await publisherPage(session, 'audio-b', { video: false });
  await sleep(1000);
  const t0 = Date.now();
  const rec = await ov.startRecording(sid, { outputMode: Recording.OutputMode.COMPOSED, hasVideo: false, name: 'voice' });
  await sleep(6000);
  await ov.stopRecording(rec.id);
  const wall = (Date.now() - t0) / 1000;
  const done = await settled(rec.id);
  assert.equal(done.status, 'ready', server.logs().slice(-4000));
  const webm = await fetchFile(rec.id, 'voice.webm');
  const p = ffprobe(webm);
  console.log(`audio-only: ${JSON.stringify({ a: p.audio?.codec_name, v: p.video?.codec_name, d: p.duration, wall })}`);
  assert.equal(p.audio?.codec_name, 'opus');
  assert.equal(p.video, undefined);
  assert.ok(Math.abs(p.duration - wall) <= 0.1 * wall, `duration ${p.duration} s vs wall ${wall} s`);
  assert.ok(!fs.existsSync(path.join(recDir, rec.id, `${rec.id}.jpg`)), 'no thumbnail without video');
  fs.rmSync(path.dirname(webm), { recursive: true, force: true });
  await a.page.close();
  await b.page.close();
  await ov.deleteRecording(rec.id);
  await session.close();
});

/** The pids of ringsfu's children named ringsfu-composer. */
function composerPids(pid) {
  const kids = [];
  for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
    const c = fs.readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
    if (c) kids.push(...c.split(/\s+/).map(Number));
  }
  return kids.filter((k) => {
    try { return fs.readFileSync(`/proc/${k}/comm`, 'utf8').trim().startsWith('ringsfu-compos'); } catch { return false; }
  });
}

test('a composer killed mid-recording: failed with the reason, media keeps flowing', async (t) => {
  if (skipWithout(t)) return;
  const sid = 'composed-kill';
  const session = await ov.createSession({ customSessionId: sid });
  const a = await publisherPage(session, 'kill-a');
  const watcher = await joinPage(browser, pages, session, 'kill-w');
  await mediaFlows(watcher.page, a.streamId, 'watcher before');
  const rec = await ov.startRecording(sid, { outputMode: Recording.OutputMode.COMPOSED, name: 'killed' });
  await sleep(3000);
  const pids = composerPids(server.proc.pid);
  assert.equal(pids.length, 1, `one composer runs: ${pids}`);
  process.kill(pids[0], 'SIGKILL');
  const done = await settled(rec.id);
  assert.equal(done.status, 'failed');
  const hook = await until(() => hooks.events.find((e) => e.event === 'recordingStatusChanged' && e.id === rec.id && e.status === 'failed'), 'failed webhook');
  console.log(`killed composer: webhook reason ${hook.reason}`);
  assert.match(hook.reason, /composer was killed/);
  // The session and its media are untouched.
  await mediaFlows(watcher.page, a.streamId, 'watcher after the composer died');
  const s = await fetch(`${server.url}/openvidu/api/sessions/${sid}`, { headers: { Authorization: basicAuth() } });
  assert.equal(s.status, 200, 'the session is still there');
  await a.page.close();
  await watcher.page.close();
  await ov.deleteRecording(rec.id);
  await session.close();
});

test('a disk that fills under the composer: failed with the reason, media goes on', async (t) => {
  if (skipWithout(t)) return;
  if (spawnSync('unshare', ['--mount', 'true']).status !== 0 && !process.env.RINGSFU_REQUIRE_TOOLS) {
    t.skip('unshare --mount is not permitted here (not root?)');
    return;
  }
  // A ringsfu of its own in a mount namespace whose recording path is a 200 KiB tmpfs.
  const small = fs.mkdtempSync(path.join(os.tmpdir(), 'ringsfu-js-composed-full-'));
  const hooks2 = await startWebhookReceiver();
  const srv = await startServer({
    wrapper: ['unshare', '--mount', '--propagation', 'private', 'sh', '-c',
      'mount -t tmpfs -o size=200k ringsfu-rec "$0" && exec "$@"', small],
    args: ['--set', `recording.path=${small}`, '--set', 'webhook.enabled=true', '--set', `webhook.endpoint=${hooks2.url}`],
  });
  const ov2 = new OpenVidu(srv.url, 'MY_SECRET');
  try {
    const sid = 'composed-full';
    const session = await ov2.createSession({ customSessionId: sid });
    const a = await publisherPage(session, 'full-a');
    const w = await joinPage(browser, pages, session, 'full-w');
    await mediaFlows(w.page, a.streamId, 'watcher before');
    const rec = await ov2.startRecording(sid, { outputMode: Recording.OutputMode.COMPOSED, name: 'full', resolution: '1280x720' });
    const failed = await until(
      () => hooks2.events.find((e) => e.event === 'recordingStatusChanged' && e.id === rec.id && e.status === 'failed'),
      'recordingStatusChanged failed', { tries: 600, everyMs: 100 },
    ).catch((e) => { throw new Error(`${e.message}; ${JSON.stringify(hooks2.events)}\n${srv.logs()}`); });
    console.log(`composed disk full: webhook reason ${failed.reason}`);
    assert.match(failed.reason, /disk full/);
    const statuses = hooks2.events.filter((e) => e.event === 'recordingStatusChanged' && e.id === rec.id).map((e) => e.status);
    assert.ok(!statuses.includes('ready'), `never ready: ${statuses}`);
    const r = await fetch(`${srv.url}/openvidu/recordings/${rec.id}/full.mp4`, { headers: { Authorization: basicAuth() } });
    assert.notEqual(r.status, 200, 'the half-written mp4 is not served as a recording');
    await mediaFlows(w.page, a.streamId, 'watcher after the disk filled');
    await a.page.close();
    await w.page.close();
    await session.close();
  } finally {
    const exit = await srv.stop();
    await hooks2.close();
    fs.rmSync(small, { recursive: true, force: true });
    assert.equal(exit?.code, 0, `ringsfu exits cleanly on SIGTERM:\n${srv.logs()}`);
  }
});

test('COMPOSED_QUICK_START: a composer is kept warm from session creation and records', async (t) => {
  if (skipWithout(t)) return;
  const sid = 'composed-quick';
  const before = composerPids(server.proc.pid).length;
  const session = await ov.createSession({
    customSessionId: sid,
    defaultRecordingProperties: { outputMode: Recording.OutputMode.COMPOSED_QUICK_START, resolution: '640x360', frameRate: 15 },
  });
  const warm = await until(() => composerPids(server.proc.pid).length === before + 1 && composerPids(server.proc.pid), 'a warm composer');
  const a = await publisherPage(session, 'quick-a');
  await sleep(1000);
  const t0 = Date.now();
  const rec = await ov.startRecording(sid, { outputMode: Recording.OutputMode.COMPOSED_QUICK_START, name: 'quick', resolution: '640x360', frameRate: 15 });
  await sleep(6000);
  await ov.stopRecording(rec.id);
  const wall = (Date.now() - t0) / 1000;
  const done = await settled(rec.id);
  assert.equal(done.status, 'ready', server.logs().slice(-4000));
  const p = ffprobe(path.join(recDir, rec.id, 'quick.mp4'));
  console.log(`quick start: warm ${warm}, ${JSON.stringify({ r: p.video?.avg_frame_rate, d: p.duration, wall })}`);
  assert.ok(Math.abs(frac(p.video.avg_frame_rate) - 15) <= 0.5);
  assert.ok(Math.abs(p.duration - wall) <= 0.05 * wall, `duration ${p.duration} s vs wall ${wall} s`);
  // A fresh warm composer for the session's next recording; none once the session is closed.
  await until(() => composerPids(server.proc.pid).length === before + 1, 'warm again after the recording');
  await a.page.close();
  await session.close();
  await until(() => composerPids(server.proc.pid).length === before, 'no warm composer after the session closed');
  await ov.deleteRecording(rec.id);
});

test('without a composer: COMPOSED answers 501 saying what to install, /config says recording on', async (t) => {
  if (skipWithout(t)) return;
  // The same ringsfu binary, copied where no ringsfu-composer lies beside it.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringsfu-js-nocomposer-'));
  const bin = path.join(dir, 'ringsfu');
  fs.copyFileSync(ringsfuBin(), bin);
  fs.chmodSync(bin, 0o755);
  const saved = process.env.RINGSFU_BIN;
  process.env.RINGSFU_BIN = bin;
  let srv;
  try {
    srv = await startServer({ args: ['--set', `recording.path=${path.join(dir, 'rec')}`] });
  } finally {
    if (saved === undefined) delete process.env.RINGSFU_BIN; else process.env.RINGSFU_BIN = saved;
  }
  try {
    const ov2 = new OpenVidu(srv.url, 'MY_SECRET');
    const cfg = await (await fetch(`${srv.url}/openvidu/api/config`, { headers: { Authorization: basicAuth() } })).json();
    assert.equal(cfg.OPENVIDU_RECORDING, true);
    const session = await ov2.createSession({ customSessionId: 'no-composer' });
    const a = await joinPage(browser, pages, session, 'nc-a', { subscribe: false });
    const r = await fetch(`${srv.url}/openvidu/api/recordings/start`, {
      method: 'POST',
      headers: { Authorization: basicAuth(), 'Content-Type': 'application/json' },
      body: JSON.stringify({ session: 'no-composer', outputMode: 'COMPOSED' }),
    });
    const body = await r.json();
    assert.equal(r.status, 501, JSON.stringify(body));
    assert.match(body.message, /ringsfu-composer/);
    assert.match(body.message, /--features composer/);
    assert.match(body.message, /gstreamer1\.0-plugins-ugly/);
    await a.page.close();
    await session.close();
  } finally {
    await srv.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('recordingLayout CUSTOM: 422 naming what is missing', async (t) => {
  if (skipWithout(t)) return;
  const sid = 'composed-custom';
  const session = await ov.createSession({ customSessionId: sid });
  const a = await joinPage(browser, pages, session, 'custom-a', { subscribe: false });
  const r = await fetch(`${server.url}/openvidu/api/recordings/start`, {
    method: 'POST',
    headers: { Authorization: basicAuth(), 'Content-Type': 'application/json' },
    body: JSON.stringify({ session: sid, outputMode: 'COMPOSED', recordingLayout: 'CUSTOM', customLayout: 'mine/index.html' }),
  });
  const body = await r.json();
  assert.equal(r.status, 422, JSON.stringify(body));
  assert.match(body.message, /customLayout "mine\/index.html"/);
  assert.match(body.message, /BEST_FIT/);
  await assert.rejects(ov.startRecording(sid, { outputMode: Recording.OutputMode.COMPOSED, recordingLayout: Recording.RecordingLayout?.CUSTOM ?? 'CUSTOM' }), /422/);
  await a.page.close();
  await session.close();
});

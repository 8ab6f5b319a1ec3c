// The unmodified openvidu-node-client 2.32.2 driving ringsfu's recording API.
//
// The binary records by default: the full flow (Chromium publishers recorded INDIVIDUAL, start /
// stop / get / list / delete, the files route, ALWAYS) against it; and a server started with
// recording off, where the SDK sees OpenVidu's answers for OPENVIDU_RECORDING=false: 501 from
// every recording call.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { startServer, basicAuth, until } from './lib/server.mjs';
import { Participant } from './lib/participant.mjs';
import { startPageServer, launchChromium, joinPage } from './lib/browser.mjs';

const require = createRequire(import.meta.url);
const { OpenVidu, Recording } = require('openvidu-node-client');

let server;
let ov;
let recordingOn = false;
const recDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringsfu-js-rec-'));

before(async () => {
  server = await startServer({
    args: ['--set', `recording.path=${recDir}`, '--set', 'recording.autostop_timeout=2'],
  });
  ov = new OpenVidu(server.url, 'MY_SECRET');
  const cfg = await (await fetch(`${server.url}/openvidu/api/config`, {
    headers: { Authorization: basicAuth() },
  })).json();
  recordingOn = cfg.OPENVIDU_RECORDING === true;
});
after(async () => {
  const exit = await server?.stop();
  fs.rmSync(recDir, { recursive: true, force: true });
  assert.equal(exit?.code, 0, `ringsfu exits cleanly on SIGTERM:\n${server?.logs()}`);
});

async function rejectsWith(promise, status) {
  await assert.rejects(promise, (e) => {
    assert.equal(e.message, String(status));
    return true;
  });
}

const get = (p) => fetch(`${server.url}${p}`, { headers: { Authorization: basicAuth() } });

test('/config tells the truth about recording', async () => {
  const cfg = await (await get('/openvidu/api/config')).json();
  const flag = await (await get('/openvidu/api/config/openvidu-recording')).text();
  assert.equal(flag, String(cfg.OPENVIDU_RECORDING));
  if (cfg.OPENVIDU_RECORDING) {
    assert.equal(cfg.OPENVIDU_RECORDING_PATH, `${recDir}/`);
    assert.equal(cfg.OPENVIDU_RECORDING_AUTOSTOP_TIMEOUT, 2);
    assert.equal(cfg.OPENVIDU_RECORDING_NOTIFICATION, 'publisher_moderator');
  } else {
    assert.equal(cfg.OPENVIDU_RECORDING_PATH, undefined);
    // Nothing is written while recording is off.
    assert.deepEqual(fs.readdirSync(recDir), []);
  }
});

test('recording off: every SDK recording call gets 501, sessions never record', async () => {
  // A server of its own with OPENVIDU_RECORDING=false.
  const off = await startServer({ args: ['--set', 'recording.enabled=false', '--set', `recording.path=${recDir}/off`] });
  const ov = new OpenVidu(off.url, 'MY_SECRET');
  const get = (p) => fetch(`${off.url}${p}`, { headers: { Authorization: basicAuth() } });
  try {
    const cfg = await (await get('/openvidu/api/config')).json();
    assert.equal(cfg.OPENVIDU_RECORDING, false);
    const session = await ov.createSession({ customSessionId: 'rec-off' });
    const conn = await session.createConnection({ role: 'PUBLISHER' });
    const p = await new Participant(conn.token).open();
    await p.join('{"clientData":"Ana"}');
    await rejectsWith(ov.startRecording('rec-off'), 501);
    await rejectsWith(ov.startRecording('rec-off', { outputMode: Recording.OutputMode.INDIVIDUAL }), 501);
    await rejectsWith(ov.stopRecording('rec-off'), 501);
    await rejectsWith(ov.getRecording('rec-off'), 501);
    await rejectsWith(ov.listRecordings(), 501);
    await rejectsWith(ov.deleteRecording('rec-off'), 501);
    await session.fetch();
    assert.equal(session.recording, false);
    assert.equal(p.joined.recordingId, undefined);
    // An ALWAYS session is accepted (as OpenVidu with recording off) and reports no recording.
    const always = await ov.createSession({ customSessionId: 'rec-always-off', recordingMode: 'ALWAYS' });
    await always.fetch();
    assert.equal(always.recording, false);
    p.ws.close();
    await session.close();
    await always.close();
    // The files route: nothing to serve.
    assert.equal((await get('/openvidu/recordings/rec-off/rec-off.zip')).status, 404);
    assert.equal(fs.existsSync(`${recDir}/off`), false, 'nothing written while recording is off');
  } finally {
    const exit = await off.stop();
    assert.equal(exit?.code, 0, `ringsfu exits cleanly on SIGTERM:\n${off.logs()}`);
  }
});

test('defaultRecordingProperties are checked at session creation (400)', async () => {
  const bad = [
    { outputMode: Recording.OutputMode.COMPOSED, resolution: '99x99' },
    { outputMode: Recording.OutputMode.COMPOSED, frameRate: 0 },
    { outputMode: Recording.OutputMode.COMPOSED, shmSize: 1024 },
    { name: 'not valid!' },
  ];
  for (const defaultRecordingProperties of bad) {
    await rejectsWith(ov.createSession({ defaultRecordingProperties }), 400);
  }
  const ok = await ov.createSession({
    defaultRecordingProperties: { outputMode: Recording.OutputMode.INDIVIDUAL, name: 'fine' },
  });
  assert.equal(ok.properties.defaultRecordingProperties.outputMode, 'INDIVIDUAL');
  await ok.close();
});

test('start/stop/get/list/delete and ALWAYS with Chromium publishers', async () => {
  assert.ok(recordingOn, 'the binary records by default (OPENVIDU_RECORDING=true)');
  const pages = await startPageServer();
  const browser = await launchChromium();
  try {
    // Error paths the SDK surfaces.
    await rejectsWith(ov.startRecording('nosuch'), 404);
    const session = await ov.createSession({ customSessionId: 'rec-flow' });
    await rejectsWith(ov.startRecording('rec-flow'), 406);
    const a = await joinPage(browser, pages, session, 'Ana', { subscribe: false });
    await a.page.evaluate(() => {
      window.session.on('recordingStarted', (e) => window.log('recordingStarted', { id: e.id, name: e.name }));
      window.session.on('recordingStopped', (e) => window.log('recordingStopped', { id: e.id, reason: e.reason }));
    });
    await a.page.evaluate(() => window.publish());
    await rejectsWith(ov.startRecording('rec-flow', { outputMode: Recording.OutputMode.COMPOSED, resolution: '4000x100' }), 422);
    await rejectsWith(ov.startRecording('rec-flow', { name: 'bad name' }), 400);

    const rec = await ov.startRecording('rec-flow', { outputMode: Recording.OutputMode.INDIVIDUAL, name: 'flow' });
    assert.equal(rec.id, 'rec-flow');
    assert.equal(rec.status, 'started');
    assert.equal(rec.properties.name, 'flow');
    await rejectsWith(ov.startRecording('rec-flow', { outputMode: Recording.OutputMode.INDIVIDUAL }), 409);
    await until(async () => (await a.page.evaluate(() => window.events)).find((e) => e.type === 'recordingStarted'), 'recordingStarted in the browser');
    await session.fetch();
    assert.equal(session.recording, true);
    await rejectsWith(ov.deleteRecording('rec-flow'), 409);
    await new Promise((r) => setTimeout(r, 3000));
    const stopped = await ov.stopRecording('rec-flow');
    assert.equal(stopped.status, 'stopped');
    await rejectsWith(ov.stopRecording('rec-flow'), 404);
    const ready = await until(async () => {
      const r = await ov.getRecording('rec-flow');
      return r.status === 'ready' && r;
    }, 'recording ready', { tries: 300, everyMs: 100 });
    assert.ok(ready.size > 0);
    assert.ok(ready.duration > 1, `duration ${ready.duration}`);
    assert.equal(ready.url, `${server.url}/openvidu/recordings/rec-flow/flow.zip`);
    const zip = await get('/openvidu/recordings/rec-flow/flow.zip');
    assert.equal(zip.status, 200);
    assert.equal((await zip.arrayBuffer()).byteLength > 0, true);
    const list = await ov.listRecordings();
    assert.ok(list.some((r) => r.id === 'rec-flow'));
    await ov.deleteRecording('rec-flow');
    await rejectsWith(ov.getRecording('rec-flow'), 404);

    // ALWAYS: starts at the first publish, stops after the autostop timeout once everyone left.
    const always = await ov.createSession({
      customSessionId: 'rec-always',
      recordingMode: 'ALWAYS',
      defaultRecordingProperties: { outputMode: Recording.OutputMode.INDIVIDUAL },
    });
    const b = await joinPage(browser, pages, always, 'Ben', { subscribe: false });
    await b.page.evaluate(() => window.publish());
    await until(async () => (await ov.listRecordings()).find((r) => r.id === 'rec-always' && r.status === 'started'), 'ALWAYS started');
    await b.page.close();
    await until(async () => {
      const r = await ov.getRecording('rec-always');
      return r.status === 'ready' && r;
    }, 'ALWAYS recording ready after the autostop', { tries: 300, everyMs: 100 });
    await rejectsWith(always.fetch(), 404);
    await a.page.close();
    await session.close();
  } finally {
    await browser.close();
    await pages.close();
  }
});

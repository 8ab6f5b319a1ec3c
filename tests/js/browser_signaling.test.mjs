// openvidu-browser 2.32.2 in headless Chromium joins ringsfu with tokens from the REST API and
// sees another participant join, signal and leave (no media).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { basicAuth, until } from './lib/server.mjs';
import { harness } from './lib/browser.mjs';

const require = createRequire(import.meta.url);
const { OpenVidu } = require('openvidu-node-client');

const h = harness();

const events = (page, type) => page.evaluate((t) => window.events.filter((e) => e.type === t), type);

test('two browsers: join, see each other, signal, leave', async () => {
  const { server, pages, browser } = h;
  const ov = new OpenVidu(server.url, 'MY_SECRET');
  const session = await ov.createSession({ customSessionId: 'browser-room' });
  const tokA = (await session.createConnection({ data: 'srvA' })).token;
  const tokB = (await session.createConnection({ data: 'srvB', role: 'MODERATOR' })).token;

  const a = await browser.ctx.newPage();
  const b = await browser.ctx.newPage();
  for (const p of [a, b]) await p.goto(pages.url);

  const ja = await a.evaluate((t) => window.join(t, 'Alice'), tokA);
  assert.equal(ja.sessionId, 'browser-room');
  assert.equal(ja.role, 'PUBLISHER');
  const jb = await b.evaluate((t) => window.join(t, 'Bob'), tokB);
  assert.equal(jb.role, 'MODERATOR');

  // A sees B join (connectionCreated for the remote connection, with its metadata).
  const created = await until(async () => (await events(a, 'connectionCreated')).find((e) => e.detail.id === jb.connectionId), 'A sees B');
  assert.equal(created.detail.data, '{"clientData":"Bob"}%/%srvB');
  // B saw A as an existing participant.
  await until(async () => (await events(b, 'connectionCreated')).find((e) => e.detail.id === ja.connectionId), 'B sees A');

  // B signals everybody; A receives it with B as sender.
  await b.evaluate(() => window.session.signal({ data: 'hi from B', type: 'chat' }));
  const sig = await until(async () => (await events(a, 'signal')).find((e) => e.detail.type === 'signal:chat'), 'signal at A');
  assert.equal(sig.detail.data, 'hi from B');
  assert.equal(sig.detail.from, jb.connectionId);

  // A signal sent through the REST API reaches A only.
  const r = await fetch(`${server.url}/openvidu/api/signal`, {
    method: 'POST',
    headers: { Authorization: basicAuth(), 'Content-Type': 'application/json' },
    body: JSON.stringify({ session: 'browser-room', to: [ja.connectionId], type: 'signal:rest', data: 'from server' }),
  });
  assert.equal(r.status, 200);
  const rs = await until(async () => (await events(a, 'signal')).find((e) => e.detail.type === 'signal:rest'), 'REST signal at A');
  assert.equal(rs.detail.from, null, 'server signals have no sender');

  // The REST view shows both active.
  await session.fetch();
  assert.equal(session.activeConnections.length, 2);

  // B leaves; A sees it with reason disconnect.
  await b.evaluate(() => window.session.disconnect());
  const gone = await until(async () => (await events(a, 'connectionDestroyed')).find((e) => e.detail.id === jb.connectionId), 'A sees B leave');
  assert.equal(gone.detail.reason, 'disconnect');

  // The server evicts A: A's session ends with forceDisconnectByServer.
  await session.forceDisconnect(ja.connectionId);
  const ended = await until(async () => (await events(a, 'sessionDisconnected'))[0], 'A evicted');
  assert.equal(ended.detail.reason, 'forceDisconnectByServer');
  // A was the last participant: the session closed with it.
  await assert.rejects(session.close(), (e) => e.message === '404');
});

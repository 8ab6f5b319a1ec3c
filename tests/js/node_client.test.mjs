// The unmodified openvidu-node-client 2.32.2 driving ringsfu's REST API.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { startServer, basicAuth, until } from './lib/server.mjs';
import { Participant } from './lib/participant.mjs';

const require = createRequire(import.meta.url);
const { OpenVidu, OpenViduRole } = require('openvidu-node-client');

let server;
let ov;
before(async () => {
  server = await startServer();
  ov = new OpenVidu(server.url, 'MY_SECRET');
});
after(async () => {
  const exit = await server?.stop();
  assert.equal(exit?.code, 0, `ringsfu exits cleanly on SIGTERM:\n${server?.logs()}`);
});

async function rejectsWith(promise, status) {
  await assert.rejects(promise, (e) => {
    assert.equal(e.message, String(status));
    return true;
  });
}

test('session lifecycle: create, custom id, 409 reuse, fetch, close', async () => {
  const s = await ov.createSession();
  assert.match(s.sessionId, /^ses_[A-Z][0-9A-Za-z]{9}$/);
  assert.ok(s.createdAt > 0);
  assert.equal(s.properties.mediaMode, 'ROUTED');
  const named = await ov.createSession({ customSessionId: 'room-42', forcedVideoCodec: 'VP8' });
  assert.equal(named.sessionId, 'room-42');
  assert.equal(named.properties.forcedVideoCodec, 'VP8');
  // The SDK turns a 409 into a fetch of the existing session.
  const again = await ov.createSession({ customSessionId: 'room-42' });
  assert.equal(again.sessionId, 'room-42');
  assert.equal(again.createdAt, named.createdAt);
  await ov.fetch();
  const ids = ov.activeSessions.map((x) => x.sessionId).sort();
  assert.ok(ids.includes(s.sessionId) && ids.includes('room-42'), `listed: ${ids}`);
  await s.close();
  await named.close();
  await ov.fetch();
  assert.ok(!ov.activeSessions.some((x) => x.sessionId === 'room-42'));
  await rejectsWith(named.fetch(), 404);
});

test('connections: create, generateToken, fetch, update, forceDisconnect', async () => {
  const s = await ov.createSession({ customSessionId: 'conn-room' });
  const c = await s.createConnection({ role: OpenViduRole.MODERATOR, data: 'server-data-1' });
  assert.match(c.connectionId, /^con_[A-Z][0-9A-Za-z]{9}$/);
  assert.equal(c.status, 'pending');
  assert.equal(c.connectionProperties.role, 'MODERATOR');
  assert.equal(c.serverData, 'server-data-1');
  assert.match(c.token, /^ws:\/\/127\.0\.0\.1:\d+\?sessionId=conn-room&token=tok_[A-Z][0-9A-Za-z]{15}$/);
  const legacy = await s.generateToken({ role: OpenViduRole.SUBSCRIBER, data: 'legacy' });
  assert.match(legacy, /token=tok_/);
  await s.fetch();
  assert.equal(s.connections.length, 2);

  // A participant joins with the token: the connection turns active.
  const p = await new Participant(c.token).open();
  const joined = await p.join('{"clientData":"Alice"}');
  assert.equal(joined.id, c.connectionId);
  assert.equal(joined.role, 'MODERATOR');
  assert.equal(joined.metadata, '{"clientData":"Alice"}%/%server-data-1');
  const changed = await s.fetch();
  assert.equal(changed, true, 'fetch reports a change after the join');
  const active = s.connections.find((x) => x.connectionId === c.connectionId);
  assert.equal(active.status, 'active');
  assert.equal(active.clientData, '{"clientData":"Alice"}');
  assert.equal(s.activeConnections.length, 1);

  // PATCH through the SDK; the participant is told.
  const updated = await s.updateConnection(c.connectionId, { role: OpenViduRole.PUBLISHER, record: false });
  assert.equal(updated.connectionProperties.role, 'PUBLISHER');
  assert.equal(updated.connectionProperties.record, false);
  await until(() => p.seen('connectionPropertyChanged'), 'connectionPropertyChanged');

  // Signals through the REST API reach the participant.
  const r = await fetch(`${server.url}/openvidu/api/signal`, {
    method: 'POST',
    headers: { Authorization: basicAuth(), 'Content-Type': 'application/json' },
    body: JSON.stringify({ session: 'conn-room', to: [c.connectionId], type: 'signal:chat', data: 'hello' }),
  });
  assert.equal(r.status, 200);
  const sig = await until(() => p.seen('sendMessage'), 'signal');
  assert.equal(sig.params.type, 'signal:chat');
  assert.equal(sig.params.data, 'hello');

  // A second participant keeps the session alive while the first is evicted.
  const c2 = await s.createConnection({ data: 'server-data-2' });
  const p2 = await new Participant(c2.token).open();
  await p2.join('Bob');
  await until(() => p.seen('participantJoined'), 'participantJoined');

  // forceDisconnect evicts the participant; the other one is told.
  await s.forceDisconnect(c.connectionId);
  const ev = await until(() => p.seen('participantEvicted'), 'participantEvicted');
  assert.equal(ev.params.reason, 'forceDisconnectByServer');
  const left = await until(() => p2.seen('participantLeft'), 'participantLeft at the other');
  assert.equal(left.params.connectionId, c.connectionId);
  assert.equal(left.params.reason, 'forceDisconnectByServer');
  await s.fetch();
  assert.ok(!s.connections.some((x) => x.connectionId === c.connectionId));
  p.close();

  // When the last participant leaves, the session closes by itself (OpenVidu's lifecycle).
  await p2.call('leaveRoom', {});
  await rejectsWith(s.fetch(), 404);
  p2.close();
});

test('errors: wrong secret, unknown session', async () => {
  const bad = new OpenVidu(server.url, 'WRONG');
  await rejectsWith(bad.createSession(), 401);
  const s = await ov.createSession();
  await s.close();
  await rejectsWith(s.createConnection(), 404);
  await rejectsWith(s.close(), 404);
  await rejectsWith(ov.startRecording('nope'), 404);
  await rejectsWith(ov.startBroadcast('nope', 'rtmp://x'), 404);
});

test('session close evicts participants with sessionClosedByServer', async () => {
  const s = await ov.createSession();
  const a = await new Participant((await s.createConnection()).token).open();
  await a.join('A');
  const b = await new Participant((await s.createConnection()).token).open();
  await b.join('B');
  await until(() => a.seen('participantJoined'), 'participantJoined');
  await s.close();
  for (const p of [a, b]) {
    const ev = await until(() => p.seen('participantEvicted'), 'participantEvicted');
    assert.equal(ev.params.reason, 'sessionClosedByServer');
  }
  a.close();
  b.close();
});

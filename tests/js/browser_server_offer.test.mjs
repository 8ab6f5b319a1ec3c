// The server-offer subscription (spec §5.2, what openvidu-browser does with
// mediaServer "mediasoup"), with Chromium's own RTCPeerConnection as the subscriber: ringsfu's
// offer from prepareReceiveVideoFrom is set as the remote description, Chromium's answer goes
// back in receiveVideoFrom, the server's trickled iceCandidate notifications are added, and
// Chromium decodes the video and plays the audio that openvidu-browser 2.32 publishes in
// another page. openvidu-browser itself never takes this path against ringsfu (joinRoom says
// "kurento"), so a hand-written JSON-RPC client drives it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { until } from './lib/server.mjs';
import { harness, joinPage } from './lib/browser.mjs';

const require = createRequire(import.meta.url);
const { OpenVidu } = require('openvidu-node-client');

const h = harness();

// Runs in the subscriber's page: JSON-RPC 2.0 over the WebSocket, then the offer/answer.
async function subscribeWithServerOffer([wsUrl, token, sessionId, streamId, publisherId]) {
  const ws = new WebSocket(wsUrl);
  let next = 0;
  const waiting = new Map();
  window.notifications = [];
  window.addedCandidates = 0;
  let pc;
  ws.onmessage = async (e) => {
    const m = JSON.parse(e.data);
    if (m.id !== undefined && waiting.has(m.id)) {
      waiting.get(m.id)(m);
      waiting.delete(m.id);
      return;
    }
    window.notifications.push(m.method);
    if (m.method === 'iceCandidate' && pc) {
      const p = m.params;
      if (p.senderConnectionId !== publisherId) throw new Error(`iceCandidate for ${p.senderConnectionId}`);
      await pc.addIceCandidate({ candidate: p.candidate, sdpMid: p.sdpMid, sdpMLineIndex: p.sdpMLineIndex });
      window.addedCandidates += 1;
    }
  };
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
  const call = (method, params) => new Promise((resolve) => {
    const id = next++;
    waiting.set(id, resolve);
    ws.send(JSON.stringify({ jsonrpc: '2.0', method, params, id }));
  });
  const ping = () => call('ping', { interval: 3000 });
  await ping();
  window.pinger = setInterval(ping, 3000);
  const joined = await call('joinRoom', {
    token, session: sessionId, platform: 'Chromium (raw RTCPeerConnection)', sdkVersion: '2.32.2',
    metadata: JSON.stringify({ clientData: 'raw' }), secret: '', recorder: false, stt: false,
  });
  if (!joined.result) return { error: joined.error };
  pc = new RTCPeerConnection();
  window.pc = pc;
  pc.onicecandidate = (e) => {
    if (e.candidate) {
      call('onIceCandidate', {
        endpointName: publisherId, candidate: e.candidate.candidate,
        sdpMid: e.candidate.sdpMid, sdpMLineIndex: e.candidate.sdpMLineIndex,
      });
    }
  };
  window.kinds = [];
  pc.ontrack = (e) => {
    window.kinds.push(e.track.kind);
    // Played, as a page would: Chromium only pulls (and counts) audio samples for a sink.
    const el = document.createElement(e.track.kind);
    el.autoplay = true;
    el.muted = e.track.kind === 'video';
    el.srcObject = new MediaStream([e.track]);
    document.body.appendChild(el);
  };
  const prepared = await call('prepareReceiveVideoFrom', { sender: streamId, reconnect: false });
  if (!prepared.result) return { error: prepared.error };
  await pc.setRemoteDescription({ type: 'offer', sdp: prepared.result.sdpOffer });
  const answer = await pc.createAnswer();
  await pc.setLocalDescription(answer);
  const received = await call('receiveVideoFrom', { sender: streamId, sdpAnswer: answer.sdp });
  if (received.error) return { error: received.error };
  window.connectionId = joined.result.id;
  return { ok: true, offerSetup: /a=setup:(\w+)/.exec(prepared.result.sdpOffer)[1] };
}

async function inbound(page) {
  return page.evaluate(async () => {
    const out = { connectionState: window.pc.connectionState };
    (await window.pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') out.framesDecoded = r.framesDecoded;
      if (r.type === 'inbound-rtp' && r.kind === 'audio') out.audioSamples = r.totalSamplesReceived;
      if (r.type === 'transport') out.srtpCipher = r.srtpCipher;
    });
    return out;
  });
}

test('Chromium answers ringsfu\'s subscription offer and decodes the stream', async () => {
  const { server, pages, browser } = h;
  const ov = new OpenVidu(server.url, 'MY_SECRET');
  const session = await ov.createSession({ customSessionId: 'server-offer-room' });
  const a = await joinPage(browser, pages, session, 'Publisher', { subscribe: false });
  const streamId = await a.page.evaluate(() => window.publish());

  const token = (await session.createConnection({ data: 'raw' })).token;
  const page = await browser.ctx.newPage();
  await page.goto(pages.url);
  const wsUrl = `${server.url.replace('http', 'ws')}/openvidu?sessionId=${session.sessionId}`;
  const r = await page.evaluate(subscribeWithServerOffer, [wsUrl, token, session.sessionId, streamId, a.connectionId]);
  assert.deepEqual(r, { ok: true, offerSetup: 'actpass' });

  let first;
  try {
    first = await until(async () => {
      const s = await inbound(page);
      return s.framesDecoded > 0 && s.audioSamples > 0 && s;
    }, 'first decoded frame and audio', { tries: 300, everyMs: 100 });
  } catch (e) {
    const why = await page.evaluate(async () => ({
      ice: window.pc.iceConnectionState, conn: window.pc.connectionState,
      notes: window.notifications, kinds: window.kinds, added: window.addedCandidates,
      local: window.pc.localDescription?.sdp, remote: window.pc.remoteDescription?.sdp,
      stats: [...(await window.pc.getStats()).values()].filter((r) => ['inbound-rtp', 'candidate-pair', 'transport'].includes(r.type)),
    }));
    console.log(JSON.stringify(why, null, 1));
    console.log(server.logs().split('\n').slice(-40).join('\n'));
    throw e;
  }
  const later = await until(async () => {
    const s = await inbound(page);
    return s.framesDecoded > first.framesDecoded + 10 && s.audioSamples > first.audioSamples && s;
  }, 'frames and samples keep coming', { tries: 300, everyMs: 100 });
  assert.equal(later.connectionState, 'connected');
  // The profile the server prefers (vendor/dimpl.patch), as Chromium reports it.
  assert.equal(later.srtpCipher, 'SRTP_AEAD_AES_128_GCM');
  assert.deepEqual((await page.evaluate(() => window.kinds)).sort(), ['audio', 'video']);
  // The server trickled its candidates (one per public address) and Chromium took them.
  assert.ok(await page.evaluate(() => window.addedCandidates) >= 1);

  // The REST view lists the subscription.
  await session.fetch();
  const rawId = await page.evaluate(() => window.connectionId);
  const raw = session.activeConnections.find((c) => c.connectionId === rawId);
  assert.deepEqual(raw.subscribers, [streamId]); // openvidu-node-client lists stream ids
  await page.evaluate(() => clearInterval(window.pinger));
  await page.close();
  await a.page.close();
});

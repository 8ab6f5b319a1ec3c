#!/usr/bin/env node
// Signaling churn against a running ringsfu, over the REST API and the WebSocket exactly as
// openvidu-node-client and openvidu-browser use them: `--rate` joins per second for
// `--duration` seconds over a pool of `--sessions` sessions. Each join (REST connection, a
// socket, `ping`, `joinRoom`) is held a moment and then ends one of four ways: `leaveRoom` and
// close; an abrupt close (no close frame: the server must evict after its reconnection window);
// the session deleted over REST; or `leaveRoom` followed by an attempt to join again with the
// same token on a new socket (OpenVidu refuses a used token). Prints one JSON line of counts;
// exits 1 when a used token was accepted or a request went unanswered.
//
// Usage: node churn.mjs --url http://127.0.0.1:4443 [--secret MY_SECRET] [--rate 50]
//                       [--duration 60] [--sessions 10] [--settle 12]
import WebSocket from 'ws';

const opt = { url: 'http://127.0.0.1:4443', secret: 'MY_SECRET', rate: 50, duration: 60, sessions: 10, settle: 12 };
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, '');
  if (!(k in opt)) throw new Error(`unknown option --${k}`);
  opt[k] = typeof opt[k] === 'number' ? Number(process.argv[i + 1]) : process.argv[i + 1];
}
const auth = 'Basic ' + Buffer.from(`OPENVIDUAPP:${opt.secret}`).toString('base64');
const wsBase = opt.url.replace(/^http/, 'ws') + '/openvidu';
const REPLY_MS = 10000;

const counts = {
  joins: 0, joined: 0, join_refused: 0, left: 0, abrupt: 0, session_deleted: 0,
  reuse_tried: 0, reuse_refused: 0, reuse_accepted: 0, rest_errors: 0, unanswered: 0,
  socket_errors: 0,
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function rest(method, path, body) {
  try {
    const r = await fetch(opt.url + path, {
      method,
      headers: { Authorization: auth, 'Content-Type': 'application/json' },
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(REPLY_MS),
    });
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) : null };
  } catch (e) {
    if (e.name === 'TimeoutError') counts.unanswered++;
    else counts.rest_errors++;
    return { status: 0, body: null };
  }
}

/** A JSON-RPC client on one socket; `call` resolves with the reply (result or error). */
function open(sessionId) {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${wsBase}?sessionId=${encodeURIComponent(sessionId)}`);
    const pending = new Map();
    let next = 1;
    const client = {
      ws,
      call(method, params) {
        const id = next++;
        ws.send(JSON.stringify({ jsonrpc: '2.0', method, params, id }));
        return new Promise((res) => {
          const t = setTimeout(() => { pending.delete(id); counts.unanswered++; res({ timeout: true }); }, REPLY_MS);
          pending.set(id, (v) => { clearTimeout(t); res(v); });
        });
      },
    };
    ws.on('message', (data) => {
      let v;
      try { v = JSON.parse(data.toString()); } catch { return; }
      if (v.id !== undefined && pending.has(v.id)) {
        const f = pending.get(v.id);
        pending.delete(v.id);
        f(v);
      }
    });
    ws.on('open', () => resolve(client));
    ws.on('error', () => { counts.socket_errors++; resolve(null); });
  });
}

async function join(sessionId, token) {
  const c = await open(sessionId);
  if (!c) return null;
  await c.call('ping', { interval: 5000 });
  const r = await c.call('joinRoom', {
    token, session: sessionId, platform: 'churn', sdkVersion: '2.32.2',
    metadata: JSON.stringify({ clientData: 'churn' }), secret: '', recorder: false, stt: false,
  });
  return { c, ok: !!r.result };
}

async function ensureSession(name) {
  const r = await rest('POST', '/openvidu/api/sessions', { customSessionId: name });
  return r.status === 200 || r.status === 409;
}

async function one(n) {
  counts.joins++;
  const sid = `churn-${n % opt.sessions}`;
  let conn = await rest('POST', `/openvidu/api/sessions/${sid}/connection`, { role: 'PUBLISHER' });
  if (conn.status === 404 && (await ensureSession(sid))) {
    conn = await rest('POST', `/openvidu/api/sessions/${sid}/connection`, { role: 'PUBLISHER' });
  }
  if (conn.status !== 200) return;
  const token = conn.body.token;
  const j = await join(sid, token);
  if (!j) return;
  if (!j.ok) {
    // The session was deleted between the connection and the join: a refusal is right.
    counts.join_refused++;
    j.c.ws.terminate();
    return;
  }
  counts.joined++;
  await sleep(200 + Math.random() * 1800);
  const pick = Math.random();
  if (pick < 0.4) {
    await j.c.call('leaveRoom', {});
    counts.left++;
    j.c.ws.close();
  } else if (pick < 0.7) {
    counts.abrupt++;
    j.c.ws.terminate();
  } else if (pick < 0.8) {
    await rest('DELETE', `/openvidu/api/sessions/${sid}`);
    counts.session_deleted++;
    j.c.ws.close();
  } else {
    await j.c.call('leaveRoom', {});
    counts.left++;
    j.c.ws.close();
    counts.reuse_tried++;
    const again = await join(sid, token);
    if (again) {
      if (again.ok) counts.reuse_accepted++;
      else counts.reuse_refused++;
      again.c.ws.close();
    }
  }
}

const started = Date.now();
const inflight = new Set();
let n = 0;
while (Date.now() - started < opt.duration * 1000) {
  const due = Math.floor(((Date.now() - started) / 1000) * opt.rate);
  while (n < due) {
    const p = one(n++).catch(() => { counts.socket_errors++; });
    inflight.add(p);
    p.finally(() => inflight.delete(p));
  }
  await sleep(5);
}
// Bounded: every operation ends within its reply timeouts.
await Promise.race([Promise.allSettled([...inflight]), sleep(4 * REPLY_MS)]);
// Abruptly closed participants are evicted after the server's reconnection window (10 s by
// default): wait `--settle` seconds, then delete what is left of the pool (sessions holding only
// connections whose join was refused stay open, as in OpenVidu); counted as `sessions_left`.
await sleep(opt.settle * 1000);
counts.sessions_left = 0;
for (let i = 0; i < opt.sessions; i++) {
  if ((await rest('DELETE', `/openvidu/api/sessions/churn-${i}`)).status === 204) counts.sessions_left++;
}
counts.seconds = (Date.now() - started) / 1000;
counts.rate = counts.joins / opt.duration;
console.log(JSON.stringify(counts));
process.exit(counts.reuse_accepted > 0 || counts.unanswered > 0 ? 1 : 0);

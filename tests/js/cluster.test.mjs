// Three ringsfu nodes as one deployment on a real Redis (issue 18): node A on 127.0.0.1, B on
// 127.0.0.2, C on 127.0.0.3, each with its own internal listener; C reaches Redis through a TCP
// proxy the test can cut (a partition from Redis). openvidu-node-client creates sessions through
// A and reads them through B and C; tokens carry the owner's WebSocket URL and openvidu-browser
// (Chromium) joins there and decodes; Redis killed (-9) and restarted empty: live sessions and
// their media survive; C cut off from Redis refuses new sessions at once and closes its own once
// its lease lapsed (never two owners); a node killed (-9) drops out within its TTL, its
// sessions are gone and their ids free, the rest is untouched. A session spans the nodes: with
// `spill_after = 1`, subscriber legs beyond the owner's first go to the other nodes, fed by one
// relay leg per stream and node, and every subscriber decodes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import { createRequire } from 'node:module';
import { startServer, freePort, until, basicAuth } from './lib/server.mjs';
import { startPageServer, launchChromium, joinPage, mediaFlows } from './lib/browser.mjs';

const require = createRequire(import.meta.url);
const { OpenVidu } = require('openvidu-node-client');

const SECRET_INTERNAL = 'cluster-test-secret-0123456789';
const LEASE = 4;
const NODE_TTL = 2;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const haveRedis = spawnSync('sh', ['-c', 'command -v redis-server']).status === 0;

let redis = null;
let redisPort;
const nodes = {};
let proxy;
let pages;
let browser;

function startRedis() {
  const p = spawn('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  return p;
}

async function redisUp() {
  await until(() => new Promise((resolve) => {
    const s = net.connect(redisPort, '127.0.0.1', () => { s.end(); resolve(true); });
    s.on('error', () => resolve(false));
  }), 'redis listening', { tries: 100, everyMs: 50 });
}

/** One Redis command over RESP (the test's own view of the store). */
function redisCmd(...args) {
  return new Promise((resolve, reject) => {
    const s = net.connect(redisPort, '127.0.0.1');
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString();
      if (buf.endsWith('\r\n')) {
        s.end();
        if (buf.startsWith('$-1')) resolve(null);
        else if (buf.startsWith('$')) resolve(buf.split('\r\n')[1]);
        else if (buf.startsWith(':')) resolve(Number(buf.slice(1).trim()));
        else resolve(buf.trim());
      }
    });
    s.on('error', reject);
    s.write(`*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join(''));
  });
}

/** A TCP proxy to Redis that can be cut (every connection dropped, new ones refused) and healed. */
async function startProxy() {
  const port = await freePort();
  let cut = false;
  const socks = new Set();
  const srv = net.createServer((c) => {
    if (cut) { c.destroy(); return; }
    const up = net.connect(redisPort, '127.0.0.1');
    socks.add(c); socks.add(up);
    c.pipe(up); up.pipe(c);
    const close = () => { c.destroy(); up.destroy(); socks.delete(c); socks.delete(up); };
    c.on('error', close); up.on('error', close); c.on('close', close); up.on('close', close);
  });
  await new Promise((r) => srv.listen(port, '127.0.0.1', r));
  return {
    port,
    cut() { cut = true; for (const s of socks) s.destroy(); socks.clear(); },
    heal() { cut = false; },
    close: () => new Promise((r) => { for (const s of socks) s.destroy(); srv.close(r); }),
  };
}

async function startNode(name, host, redisUrl, extraEnv = {}) {
  const internal = await freePort();
  const srv = await startServer({
    host,
    env: {
      RINGSFU_CLUSTER_REDIS_URL: redisUrl,
      RINGSFU_CLUSTER_NODE_ID: name,
      RINGSFU_CLUSTER_INTERNAL_ADDRESS: `${host}:${internal}`,
      RINGSFU_CLUSTER_INTERNAL_SECRET: SECRET_INTERNAL,
      RINGSFU_CLUSTER_LEASE: String(LEASE),
      RINGSFU_CLUSTER_NODE_TTL: String(NODE_TTL),
      // One subscriber leg on a node, then its sessions' new legs go to the other nodes.
      RINGSFU_CLUSTER_SPILL_AFTER: '1',
      ...extraEnv,
    },
  });
  srv.name = name;
  srv.internal = `http://${host}:${internal}`;
  return srv;
}

const api = (node, path, init = {}) => fetch(`${node.url}/openvidu/api${path}`, {
  ...init,
  headers: { Authorization: basicAuth(), 'Content-Type': 'application/json', ...(init.headers || {}) },
});

async function metric(node, name) {
  const text = await (await fetch(`${node.url}/metrics`, { headers: { Authorization: basicAuth() } })).text();
  const line = text.split('\n').find((l) => l.startsWith(name + ' ') || l.startsWith(name + '{'));
  return line ? Number(line.split(' ').pop()) : NaN;
}

const owner = (sid) => redisCmd('GET', `ringsfu:session:${sid}`);

before(async () => {
  if (!haveRedis) return;
  redisPort = await freePort();
  redis = startRedis();
  await redisUp();
  proxy = await startProxy();
  const url = `redis://127.0.0.1:${redisPort}`;
  nodes.A = await startNode('A', '127.0.0.1', url);
  nodes.B = await startNode('B', '127.0.0.2', url);
  // C in simulcast mode: openvidu-browser subscribes to its sessions through server offers.
  nodes.C = await startNode('C', '127.0.0.3', `redis://127.0.0.1:${proxy.port}`, { OPENVIDU_WEBRTC_SIMULCAST: 'true' });
  for (const n of Object.values(nodes)) {
    await until(async () => (await metric(n, 'ringsfu_cluster_nodes')) === 3, `${n.name} sees 3 nodes`, { tries: 100, everyMs: 100 });
  }
  pages = await startPageServer();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await pages?.close();
  for (const n of Object.values(nodes)) await n.stop().catch(() => {});
  await proxy?.close();
  redis?.kill('SIGKILL');
});

test('sessions created through A are placed by load and served through every node', { skip: !haveRedis && 'redis-server not installed' }, async () => {
  const ovA = new OpenVidu(nodes.A.url, 'MY_SECRET');
  const ids = [];
  for (let i = 0; i < 9; i++) ids.push((await ovA.createSession({ customSessionId: `cl-${i}` })).sessionId);
  const owners = {};
  for (const sid of ids) {
    const o = await owner(sid);
    assert.ok(['A', 'B', 'C'].includes(o), `${sid} owned by a node, got ${o}`);
    owners[o] = (owners[o] || 0) + 1;
  }
  // Two random choices over 9 placements: more than one node gets sessions.
  assert.ok(Object.keys(owners).length >= 2, `placement spreads: ${JSON.stringify(owners)}`);

  // Read through B and C: every session, whoever owns it.
  for (const n of [nodes.B, nodes.C]) {
    for (const sid of ids) {
      const r = await api(n, `/sessions/${sid}`);
      assert.equal(r.status, 200, `${sid} through ${n.name}`);
      assert.equal((await r.json()).id, sid);
    }
    const list = await (await api(n, '/sessions')).json();
    for (const sid of ids) assert.ok(list.content.some((s) => s.id === sid), `${sid} in ${n.name}'s list`);
    assert.equal(list.numberOfElements, list.content.length);
  }
  // node-client's fetch() (GET /sessions) through B sees them all too.
  const ovB = new OpenVidu(nodes.B.url, 'MY_SECRET');
  await ovB.fetch();
  for (const sid of ids) assert.ok(ovB.activeSessions.some((s) => s.sessionId === sid));

  // A token minted through any node carries the owner's WebSocket URL.
  for (const sid of ids.slice(0, 3)) {
    const o = await owner(sid);
    const r = await api(nodes.C, `/sessions/${sid}/connection`, { method: 'POST', body: '{}' });
    assert.equal(r.status, 200);
    const tok = (await r.json()).token;
    assert.ok(tok.startsWith(`ws://${new URL(nodes[o].url).host}`), `token ${tok} names owner ${o}`);
  }
  // Same custom id again, through another node: 409 from its owner.
  const dup = await api(nodes.B, '/sessions', { method: 'POST', body: JSON.stringify({ customSessionId: ids[0] }) });
  assert.equal(dup.status, 409);
  // DELETE through a non-owner: the owner closes it and releases the claim.
  const sid = ids[8];
  const o = await owner(sid);
  const other = ['A', 'B', 'C'].find((x) => x !== o);
  assert.equal((await api(nodes[other], `/sessions/${sid}`, { method: 'DELETE' })).status, 204);
  assert.equal((await api(nodes[o], `/sessions/${sid}`)).status, 404);
  await until(async () => (await owner(sid)) === null, 'claim released', { tries: 60, everyMs: 100 });

  // Recordings: the list is every node's, one recording is looked for node by node.
  const recs = await api(nodes.B, '/recordings');
  assert.equal(recs.status, 200);
  const rj = await recs.json();
  assert.equal(rj.count, rj.items.length);
  assert.equal((await api(nodes.B, '/recordings/no-such-recording')).status, 404);
  // The internal listener refuses what no node signed, even with the right Basic auth.
  const bad = await fetch(`${nodes.A.internal}/openvidu/api/sessions`, { headers: { Authorization: basicAuth() } });
  assert.equal(bad.status, 401);
  // Bad Basic auth is refused before anything is forwarded.
  const unauth = await fetch(`${nodes.B.url}/openvidu/api/sessions/${ids[0]}`, { headers: { Authorization: basicAuth('nope') } });
  assert.equal(unauth.status, 401);
  assert.ok((await metric(nodes.C, 'ringsfu_cluster_forwarded_total')) > 0);
});

let live; // the browser session: { sid, owner, pub, sub }

test('a browser joins with a token from another node, lands on the owner, and its media survives a Redis restart', { skip: !haveRedis && 'redis-server not installed' }, async () => {
  // The session through A; the token through whichever node does not own it.
  // (not on C, whose sessions the partition test closes)
  const ovA = new OpenVidu(nodes.A.url, 'MY_SECRET');
  let created;
  let o;
  for (let i = 0; i < 30; i++) {
    created = await ovA.createSession({ customSessionId: `cl-browser-${i}` });
    o = await owner(created.sessionId);
    if (o !== 'C') break;
  }
  assert.notEqual(o, 'C');
  const other = ['A', 'B', 'C'].find((x) => x !== o);
  const ovOther = new OpenVidu(nodes[other].url, 'MY_SECRET');
  await ovOther.fetch();
  const session = ovOther.activeSessions.find((s) => s.sessionId === created.sessionId);
  assert.ok(session, 'the session is visible through a non-owner');
  const pub = await joinPage(browser, pages, session, 'pub', { subscribe: false });
  await pub.page.evaluate(() => window.publish());
  const sub = await joinPage(browser, pages, session, 'sub');
  const streamId = await until(async () => {
    const s = await api(nodes[other], `/sessions/${created.sessionId}`);
    const j = await s.json();
    return j.connections.content.find((c) => c.publishers.length)?.publishers[0].streamId;
  }, 'the published stream, read through a non-owner');
  await mediaFlows(sub.page, streamId, 'subscriber on the owner');
  live = { sid: created.sessionId, owner: o, sub, streamId };

  // Redis dies (-9) and comes back empty: the owner keeps its session and its media, writes its
  // claim again, and the other nodes find it again.
  redis.kill('SIGKILL');
  await sleep(1500);
  redis = startRedis();
  await redisUp();
  await until(async () => (await owner(created.sessionId)) === o, 'claim written again after the restart', { tries: 100, everyMs: 100 });
  await mediaFlows(sub.page, streamId, 'after the Redis restart');
  const r = await api(nodes[other], `/sessions/${created.sessionId}`);
  assert.equal(r.status, 200);
  assert.equal((await r.json()).connections.numberOfElements, 2);
  for (const n of Object.values(nodes)) {
    await until(async () => (await metric(n, 'ringsfu_cluster_nodes')) === 3, `${n.name} sees 3 nodes again`, { tries: 100, everyMs: 100 });
  }
});

/**
 * One session owned by `o` with a Chromium publisher and `n` Chromium subscribers: legs beyond
 * the owner's `spill_after` (1) go to the other nodes, fed by one relay leg per node; every
 * subscriber decodes; leaving releases every leg and relay on every node.
 */
async function spanOver(o, n, tag) {
  const localBefore = o === live.owner ? 1 : 0; // the live session's leg
  let sid = null;
  for (let i = 0; i < 60 && !sid; i++) {
    const r = await api(nodes[o], '/sessions', { method: 'POST', body: JSON.stringify({ customSessionId: `cl-${tag}-${i}` }) });
    const id = (await r.json()).id;
    if ((await owner(id)) === o) sid = id;
    else await api(nodes[o], `/sessions/${id}`, { method: 'DELETE' });
  }
  assert.ok(sid, `a session on ${o}`);
  const others = ['A', 'B', 'C'].filter((x) => x !== o);
  const ov = new OpenVidu(nodes[o].url, 'MY_SECRET');
  await ov.fetch();
  const session = ov.activeSessions.find((s) => s.sessionId === sid);
  const pub = await joinPage(browser, pages, session, `${tag}-pub`, { subscribe: false });
  await pub.page.evaluate(() => window.publish());
  const streamId = await until(async () => {
    const j = await (await api(nodes[o], `/sessions/${sid}`)).json();
    return j.connections.content.find((c) => c.publishers.length)?.publishers[0].streamId;
  }, 'the published stream');
  const subs = [];
  for (let i = 0; i < n; i++) subs.push(await joinPage(browser, pages, session, `${tag}-sub${i}`));
  for (const s of subs) await mediaFlows(s.page, streamId, `${s.connectionId} of ${tag}`);
  const remote = n - Math.max(0, 1 - localBefore);
  assert.equal(await metric(nodes[o], 'ringsfu_cluster_remote_legs'), remote, 'legs on other nodes');
  let hosted = 0;
  for (const x of others) {
    const h = await metric(nodes[x], 'ringsfu_cluster_hosted_legs');
    assert.ok(h >= 1, `${x} hosts a leg of the session (${h})`);
    assert.equal(await metric(nodes[x], 'ringsfu_cluster_relays_in'), 1, `${x} receives the stream once`);
    hosted += h;
  }
  assert.equal(hosted, remote);
  assert.equal(await metric(nodes[o], 'ringsfu_cluster_relays_out'), 2, 'one relay leg per other node');
  // The owner keeps the signaling: every subscription is in its registry.
  const j = await (await api(nodes[o], `/sessions/${sid}`)).json();
  for (const s of subs) {
    const c = j.connections.content.find((x) => x.connectionId === s.connectionId);
    assert.equal(c.subscribers.length, 1, `${s.connectionId} subscribes`);
  }
  // Leaving releases the legs and the relays on every node.
  for (const s of subs) await s.page.evaluate(() => window.session.disconnect());
  await pub.page.evaluate(() => window.session.disconnect());
  await until(async () => (await metric(nodes[o], 'ringsfu_cluster_remote_legs')) === 0
    && (await metric(nodes[o], 'ringsfu_cluster_relays_out')) === 0, 'owner released its remote legs', { tries: 100, everyMs: 100 });
  for (const x of others) {
    await until(async () => (await metric(nodes[x], 'ringsfu_cluster_hosted_legs')) === 0
      && (await metric(nodes[x], 'ringsfu_cluster_relays_in')) === 0, `${x} released the legs and relay`, { tries: 100, everyMs: 100 });
  }
  for (const s of [...subs, pub]) await s.page.close();
}

test('a session spans the three nodes: subscriber legs on the other two, fed by relay legs, decode (browser offers)', { skip: !haveRedis && 'redis-server not installed' }, async () => {
  assert.ok(live, 'the browser test ran');
  await spanOver(live.owner, 3, 'span');
});

test('a simulcast session on C spans the nodes too (server offers, three encodings relayed)', { skip: !haveRedis && 'redis-server not installed' }, async () => {
  assert.ok(live, 'the browser test ran');
  const config = await (await api(nodes.C, '/config')).json();
  assert.equal(config.OPENVIDU_WEBRTC_SIMULCAST, true, 'C runs in simulcast mode');
  await spanOver('C', 3, 'simul');
});

test('C cut off from Redis refuses new sessions at once and closes its own after the lease', { skip: !haveRedis && 'redis-server not installed' }, async () => {
  // A session on C for sure: created through C's internal placement is random, so retry.
  let sid = null;
  for (let i = 0; i < 30 && !sid; i++) {
    const r = await api(nodes.C, '/sessions', { method: 'POST', body: JSON.stringify({ customSessionId: `cl-c-${i}` }) });
    assert.equal(r.status, 200);
    const id = (await r.json()).id;
    if ((await owner(id)) === 'C') sid = id;
  }
  assert.ok(sid, 'a session placed on C');
  proxy.cut();
  await until(async () => (await api(nodes.C, '/sessions', { method: 'POST', body: '{}' })).status === 503,
    'C refuses new sessions', { tries: 50, everyMs: 200 });
  // Once its lease lapsed, C has closed it: no two owners even if another node takes the id.
  // (C cannot tell who owns it now: 503, not 404.)
  await until(async () => (await metric(nodes.C, 'ringsfu_cluster_fenced_sessions_total')) >= 1, 'C closed its sessions', { tries: 100, everyMs: 200 });
  assert.equal((await api(nodes.C, `/sessions/${sid}`)).status, 503);
  // The others saw C's record expire, and can host the id again.
  await until(async () => (await metric(nodes.A, 'ringsfu_cluster_nodes')) === 2, 'A sees C gone', { tries: 100, everyMs: 100 });
  const again = await api(nodes.A, '/sessions', { method: 'POST', body: JSON.stringify({ customSessionId: sid }) });
  assert.equal(again.status, 200);
  assert.notEqual(await owner(sid), 'C');
  proxy.heal();
  await until(async () => (await metric(nodes.C, 'ringsfu_cluster_up')) === 1, 'C reaches Redis again', { tries: 100, everyMs: 100 });
  await until(async () => (await api(nodes.C, '/sessions', { method: 'POST', body: '{}' })).status === 200, 'C accepts sessions again', { tries: 50, everyMs: 200 });
  // Through C, the id now lives elsewhere.
  assert.equal((await api(nodes.C, `/sessions/${sid}`)).status, 200);
});

test('a node killed with -9 drops out within its TTL; its sessions are gone, the rest untouched', { skip: !haveRedis && 'redis-server not installed' }, async () => {
  assert.ok(live, 'the browser test ran');
  const victim = ['A', 'B', 'C'].find((x) => x !== live.owner && x !== 'A');
  const witness = ['A', 'B', 'C'].find((x) => x !== live.owner && x !== victim) || live.owner;
  // A session owned by the victim.
  let sid = null;
  for (let i = 0; i < 30 && !sid; i++) {
    const r = await api(nodes[victim], '/sessions', { method: 'POST', body: JSON.stringify({ customSessionId: `cl-v-${i}` }) });
    const id = (await r.json()).id;
    if ((await owner(id)) === victim) sid = id;
  }
  assert.ok(sid, `a session on ${victim}`);
  // The witness knows the victim alive before it dies (it may have been cut off just before).
  await until(async () => (await metric(nodes[witness], 'ringsfu_cluster_nodes')) === 3, `${witness} sees 3 nodes`, { tries: 100, everyMs: 100 });
  nodes[victim].proc.kill('SIGKILL');
  await until(async () => (await metric(nodes[witness], 'ringsfu_cluster_nodes')) === 2, `${witness} sees ${victim} gone`, { tries: 100, everyMs: 100 });
  const gone = await api(nodes[witness], `/sessions/${sid}`);
  assert.equal(gone.status, 404, `through ${witness}: ${await gone.text()}`);
  const again = await api(nodes[witness], '/sessions', { method: 'POST', body: JSON.stringify({ customSessionId: sid }) });
  assert.equal(again.status, 200, 'the dead node\'s session id is free again');
  // The browser session on another node goes on.
  await mediaFlows(live.sub.page, live.streamId, 'after a node died');
  assert.equal((await api(nodes[witness], `/sessions/${live.sid}`)).status, 200);
  delete nodes[victim];
});

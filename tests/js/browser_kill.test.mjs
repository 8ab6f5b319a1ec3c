// A publisher that vanishes: openvidu-browser publishes from one headless Chromium process, a
// subscriber watches from another; the publisher's whole browser (its process group) is killed
// with SIGKILL mid-stream. Its WebSocket closes with it: after the reconnection window ringsfu
// evicts the participant with OpenVidu's `networkDisconnect`, the subscriber gets
// `streamDestroyed` and `connectionDestroyed` with that reason, and every media, registry and
// TURN gauge on /metrics returns to what it was before the publisher joined.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';
import { startServer, until, basicAuth } from './lib/server.mjs';
import { startPageServer, CHROMIUM_ARGS, chromiumPath, mediaFlows } from './lib/browser.mjs';

const require = createRequire(import.meta.url);
const { OpenVidu } = require('openvidu-node-client');

let server, pages;
const browsers = [];
before(async () => {
  server = await startServer({
    args: [
      '--set', `media.io_backend=${process.env.RINGSFU_IO_BACKEND || 'auto'}`,
      '--set', `media.shards=${process.env.RINGSFU_SHARDS || '1'}`,
    ],
  });
  pages = await startPageServer();
});
after(async () => {
  for (const b of browsers) await b.close().catch(() => {});
  await pages?.close();
  await server?.stop();
});

/** A Chromium of its own (its own process group, so it can be killed whole); `pid`: the
 * browser process, the group's leader. */
async function ownChromium() {
  const srv = await chromium.launchServer({ executablePath: chromiumPath(), headless: true, args: CHROMIUM_ARGS });
  browsers.push(srv);
  const browser = await chromium.connect(srv.wsEndpoint());
  browser.pid = srv.process().pid;
  return browser;
}

async function joinIn(browser, session, name, subscribe) {
  const token = (await session.createConnection({ data: name })).token;
  const page = await (await browser.newContext()).newPage();
  await page.goto(pages.url);
  await page.evaluate((s) => { window.autoSubscribe = s; }, subscribe);
  const j = await page.evaluate(([t, n]) => window.join(t, n), [token, name]);
  return { page, ...j };
}

const events = (page, type) => page.evaluate((t) => window.events.filter((e) => e.type === t), type);

const GAUGES = [
  'ringsfu_participants', 'ringsfu_publishers', 'ringsfu_subscribers',
  'ringsfu_shard_media_publishers', 'ringsfu_shard_media_subscribers', 'ringsfu_shard_ice_legs',
  'ringsfu_shard_mirror_producers', 'ringsfu_turn_allocations', 'ringsfu_turn_relay_sockets',
];

/** Sum over label sets of each gauge in GAUGES. */
async function gauges() {
  const r = await fetch(`${server.url}/metrics`, { headers: { Authorization: basicAuth() } });
  const text = await r.text();
  const out = {};
  for (const g of GAUGES) {
    out[g] = text.split('\n')
      .filter((l) => l.startsWith(`${g} `) || l.startsWith(`${g}{`))
      .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
  }
  return out;
}

test('a publisher killed with SIGKILL: subscribers told networkDisconnect, every gauge back', async () => {
  const ov = new OpenVidu(server.url, 'MY_SECRET');
  const session = await ov.createSession({ customSessionId: 'kill-room' });
  const subBrowser = await ownChromium();
  const b = await joinIn(subBrowser, session, 'Bob', true);
  // Once Bob is in alone: what every gauge must come back to.
  const baseline = await until(async () => {
    const g = await gauges();
    return g.ringsfu_participants === 1 && g;
  }, 'Bob counted');

  const pubBrowser = await ownChromium();
  const a = await joinIn(pubBrowser, session, 'Alice', false);
  const streamId = await a.page.evaluate(() => window.publish());
  await until(async () => (await events(b.page, 'streamCreated')).find((e) => e.detail.id === streamId), 'Bob sees the stream');
  await mediaFlows(b.page, streamId, 'Bob');
  // Chromium usually allocates on ringsfu's TURN (joinRoom's customIceServers; the gauge is
  // published once a second) but not in every run (seen with no TURN request at all): the
  // allocations are waited for up to 15 s, and when there are some they must be gone at the end
  // like every other gauge (checked below either way).
  let during = await gauges();
  for (let i = 0; i < 150 && during.ringsfu_turn_allocations === 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
    during = await gauges();
  }
  if (during.ringsfu_turn_allocations === 0) console.log('no TURN allocation in this run: the TURN part is not exercised');
  console.log(`gauges before ${JSON.stringify(baseline)}\n       during ${JSON.stringify(during)}`);
  assert.equal(during.ringsfu_publishers, 1);
  assert.equal(during.ringsfu_subscribers, 1);

  // SIGKILL to the publisher's whole browser: playwright starts it as a process group leader.
  const pid = pubBrowser.pid;
  const killedAt = Date.now();
  process.kill(-pid, 'SIGKILL');

  const gone = await until(async () => (await events(b.page, 'streamDestroyed')).find((e) => e.detail.id === streamId),
    'Bob sees the stream destroyed', { tries: 400, everyMs: 100 });
  assert.equal(gone.detail.reason, 'networkDisconnect');
  const left = await until(async () => (await events(b.page, 'connectionDestroyed')).find((e) => e.detail.id === a.connectionId),
    'Bob sees Alice leave', { tries: 100, everyMs: 100 });
  assert.equal(left.detail.reason, 'networkDisconnect');
  const toldAfter = Date.now() - killedAt;

  // Every gauge back to the baseline, within the consent timeout (30 s) of the kill.
  let after;
  await until(async () => {
    after = await gauges();
    return GAUGES.every((g) => after[g] === baseline[g]);
  }, 'gauges back to the baseline', { tries: 300, everyMs: 100 }).catch((e) => {
    throw new Error(`${e.message}: baseline ${JSON.stringify(baseline)}, after ${JSON.stringify(after)}`);
  });
  const freedAfter = Date.now() - killedAt;
  console.log(`killed -> subscriber told: ${toldAfter} ms; -> gauges back: ${freedAfter} ms; after ${JSON.stringify(after)}`);
  assert.ok(freedAfter < 30000, `freed after ${freedAfter} ms`);
  await session.fetch();
  assert.deepEqual(session.activeConnections.map((c) => c.connectionId), [b.connectionId]);
});

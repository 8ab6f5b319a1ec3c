// The README's first command, as a user runs it: the release binary with no flags, no
// configuration file and a cleared environment (only PATH and HOME), on this machine's own core
// count (so media.shards is whatever the binary's default makes of it, never set here), in a
// network namespace of its own where it binds its default ports (127.0.0.1:4443, media UDP
// 40000 and up, TURN 3478). It must serve a session created over REST with the dev secret, the
// demo page, the WebSocket endpoint, and two Chromium pages on the demo page that decode each
// other's video; then stop on SIGTERM with exit code 0; and print no WARN or ERROR line from
// start to exit. Issue 13: on a 2-core machine the default start failed at once ("cannot bind
// UDP 127.0.0.1:40001") while every other test, which sets shards and ports, passed.
//
// Kept out of tests/js/*.test.mjs (tools/test.sh runs those against the debug build): run it
// with RINGSFU_BIN pointing at a release build (default target/release/ringsfu):
//   cd tests/js && node --test --test-timeout=300000 readme/first_command.test.mjs
// Needs root (unshare --net, nsenter); without it the test skips, or fails when
// RINGSFU_REQUIRE_TOOLS=1.
//
// This process stays in its own namespace; Chromium is started inside the server's through a
// wrapper that nsenter's into it, and everything (REST, WebSocket, demo page) is reached from
// pages of that Chromium on http://127.0.0.1:4443.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot, SECRET, until } from '../lib/server.mjs';
import { launchChromium, chromiumPath } from '../lib/browser.mjs';
import { joinDemo, seeEachOther, benLeaves, tiles, remoteFrames, keepScreenshot } from '../lib/demo.mjs';

const BIN = path.resolve(repoRoot, process.env.RINGSFU_BIN || 'target/release/ringsfu');
const ORIGIN = 'http://127.0.0.1:4443';
const SESSION = 'readme';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const nsAllowed = spawnSync('unshare', ['--net', 'true']).status === 0;
const skip = nsAllowed ? false
  : 'unshare --net is not permitted here (needs root): the README first-command test did not run';
if (!nsAllowed && process.env.RINGSFU_REQUIRE_TOOLS === '1') {
  throw new Error(`${skip}; RINGSFU_REQUIRE_TOOLS=1 makes that a failure`);
}

let tmp; // holds the server's working directory and the Chromium wrapper
let server; // { proc, pid, out: [], exited }
let browser;
let probe; // a page on ORIGIN for the REST and WebSocket checks
let nsFd; // the server's network namespace, open

/** What the server printed so far, colours stripped. */
const output = () => server.out.join('').replace(/\x1b\[[0-9;]*m/g, '');
const tail = () => output().split('\n').slice(-40).join('\n');

/** The server's lines at level WARN or ERROR (tracing's text format). */
function warnLines() {
  return output().split('\n')
    .filter((l) => /^(\S+\s+)?(WARN|ERROR)\b/.test(l.trim()));
}

function startServer() {
  // An empty working directory: nothing there for the binary to pick up.
  const cwd = fs.mkdtempSync(path.join(tmp, 'cwd-'));
  // unshare without --fork execs sh, which execs the binary: the child's pid is ringsfu's.
  const proc = spawn('unshare', ['--net', '--', 'sh', '-c', 'ip link set lo up && exec env -i PATH="$PATH" HOME="$HOME" "$0"', BIN], {
    cwd,
    env: { PATH: process.env.PATH, HOME: process.env.HOME || '/root' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const s = { proc, pid: proc.pid, out: [], exited: null };
  proc.stdout.on('data', (d) => s.out.push(d.toString()));
  proc.stderr.on('data', (d) => s.out.push(d.toString()));
  proc.on('exit', (code, sig) => { s.exited = { code, sig }; });
  return s;
}

const died = () => new Error(
  `ringsfu (${BIN}, no flags, default configuration) exited ${JSON.stringify(server.exited)} `
  + `before serving; its output:\n${output()}`);

/** Runs `fn` in the probe page and returns its result. */
const inPage = (fn, arg) => probe.evaluate(fn, arg);

/** An OpenVidu REST call from the probe page (same origin) as OPENVIDUAPP:`secret`; resolves
 * with { status, body }. Credentials 'omit': a 401, which carries WWW-Authenticate, brings up no
 * login prompt. */
const rest = (method, url, secret, body = null) => inPage(async ([method, url, auth, body]) => {
  const r = await fetch(url, {
    method, body, credentials: 'omit',
    headers: { Authorization: 'Basic ' + btoa(auth), 'Content-Type': 'application/json' },
  });
  return { status: r.status, body: await r.text() };
}, [method, url, `OPENVIDUAPP:${secret}`, body]);

/** The active connections of SESSION, from the REST API; none once the session is gone (it
 * closes when its last participant leaves, as OpenVidu's do). */
async function activeConnections() {
  const r = await rest('GET', `/openvidu/api/sessions/${SESSION}`, SECRET);
  if (r.status === 404) return [];
  assert.equal(r.status, 200, r.body);
  return JSON.parse(r.body).connections.content.filter((c) => c.status === 'active');
}

before(async () => {
  if (skip) return;
  assert.ok(fs.existsSync(BIN), `no binary at ${BIN} (build it: cargo build --release)`);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ringsfu-readme-'));
  server = startServer();
  // Bounded: until the exec chain (unshare, sh) has reached the binary, 200 x 50 ms.
  const real = fs.realpathSync(BIN);
  await until(async () => {
    if (server.exited) throw died();
    try { return fs.readlinkSync(`/proc/${server.pid}/exe`) === real; } catch { return false; }
  }, `process ${server.pid} to exec ${real}`, { tries: 200, everyMs: 50 });

  // Chromium in the server's network namespace, through a descriptor of that namespace held
  // here: Chromium starts even if the server has just exited, and the readiness loop below then
  // reports the server's exit and output.
  try {
    nsFd = fs.openSync(`/proc/${server.pid}/ns/net`, 'r');
  } catch (e) {
    if (server.exited) throw died();
    throw e;
  }
  const wrapper = path.join(tmp, 'chromium-in-ns');
  fs.writeFileSync(wrapper,
    `#!/bin/sh\nexec nsenter --net=/proc/${process.pid}/fd/${nsFd} ${chromiumPath()} "$@"\n`, { mode: 0o755 });
  browser = await launchChromium({ executablePath: wrapper });
  probe = browser.ctx.pages()[0] || await browser.ctx.newPage();

  // Ready when the demo page loads: bounded, 100 attempts about 200 ms apart (each load at most
  // 5 s) within 60 s, stopping at once if the server exited.
  let last;
  const deadline = Date.now() + 60000;
  for (let i = 0; ; i++) {
    if (server.exited) throw died();
    try {
      const r = await probe.goto(`${ORIGIN}/`, { timeout: 5000 });
      if (r && r.status() === 200) break;
      last = `HTTP ${r && r.status()}`;
    } catch (e) { last = e.message.split('\n')[0]; }
    if (i === 99 || Date.now() > deadline) throw new Error(`${ORIGIN}/ never loaded (last: ${last}); server output:\n${output()}`);
    await sleep(200);
  }
}, { timeout: 120000 });

after(async () => {
  if (server && !server.exited) {
    server.proc.kill('SIGKILL');
    for (let i = 0; i < 50 && !server.exited; i++) await sleep(100);
  }
  await browser?.close().catch(() => {});
  if (nsFd !== undefined) fs.closeSync(nsFd);
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
}, { timeout: 60000 });

test('it is the binary alone: no arguments, only PATH and HOME, its own network namespace', { skip, timeout: 60000 }, () => {
  const cmdline = fs.readFileSync(`/proc/${server.pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  assert.deepEqual(cmdline, [BIN]);
  const env = fs.readFileSync(`/proc/${server.pid}/environ`, 'utf8').split('\0').filter(Boolean)
    .map((kv) => kv.split('=')[0]).sort();
  assert.deepEqual(env, ['HOME', 'PATH']);
  assert.notEqual(fs.readlinkSync(`/proc/${server.pid}/ns/net`), fs.readlinkSync('/proc/self/ns/net'));
});

test('REST: a session created with the dev secret; a wrong secret is refused', { skip, timeout: 60000 }, async () => {
  const post = (secret) => rest('POST', '/openvidu/api/sessions', secret, JSON.stringify({ customSessionId: SESSION }));
  const bad = await post('not-the-secret');
  assert.equal(bad.status, 401, bad.body);
  const ok = await post(SECRET);
  assert.equal(ok.status, 200, ok.body);
  assert.equal(JSON.parse(ok.body).id, SESSION);
});

test('the WebSocket endpoint opens and answers ping', { skip, timeout: 60000 }, async () => {
  const reply = await inPage((url) => new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const timer = setTimeout(() => { ws.close(); reject(new Error('no answer to ping within 10 s')); }, 10000);
    ws.onopen = () => ws.send(JSON.stringify({ jsonrpc: '2.0', method: 'ping', params: { interval: 5000 }, id: 0 }));
    ws.onmessage = (e) => { clearTimeout(timer); ws.close(); resolve(JSON.parse(e.data)); };
    ws.onerror = () => { clearTimeout(timer); reject(new Error(`WebSocket ${url} failed`)); };
  }), `${ORIGIN.replace('http', 'ws')}/openvidu`);
  assert.equal(reply.jsonrpc, '2.0', JSON.stringify(reply));
  assert.equal(reply.id, 0, JSON.stringify(reply));
  assert.equal(reply.result?.value, 'pong', JSON.stringify(reply));
});

test('two pages on the demo page join the session and decode each other', { skip, timeout: 120000 }, async () => {
  const pages = await joinDemo(browser.ctx, `${ORIGIN}/`, SESSION, ['Ann', 'Ben']);
  try {
    await seeEachOther(pages);
    await keepScreenshot(pages[0], 'readme-first-command.png');
    // Both joined the session created over REST.
    let conns = await activeConnections();
    assert.deepEqual(conns.map((c) => c.serverData).sort(), ['Ann', 'Ben'], JSON.stringify(conns.map((c) => c.serverData)));
    // Both leave; the session has nobody left.
    await benLeaves(pages);
    await pages[0].click('#leave');
    await until(async () => (await remoteFrames(pages[0])).length === 0 && (await tiles(pages[0], true)).length === 0,
      "Ann's page emptied");
    await until(async () => (conns = await activeConnections()).length === 0,
      `no active connection left in ${SESSION}`, { tries: 100, everyMs: 100 })
      .catch((e) => { throw new Error(`${e.message}; still there: ${JSON.stringify(conns.map((c) => c.serverData))}`); });
  } finally {
    for (const p of pages) await p.close();
  }
});

test('SIGTERM stops it with exit code 0', { skip, timeout: 60000 }, async () => {
  assert.equal(server.exited, null, `ringsfu exited early:\n${tail()}`);
  await probe.close();
  server.proc.kill('SIGTERM');
  // Bounded: 400 x 100 ms (drain_timeout defaults to 30 s; with nobody left it needs none).
  for (let i = 0; i < 400 && !server.exited; i++) await sleep(100);
  assert.deepEqual(server.exited, { code: 0, sig: null }, `after SIGTERM; last output:\n${tail()}`);
});

test('no WARN or ERROR line from start to exit', { skip, timeout: 60000 }, () => {
  const bad = warnLines();
  const upTo = server.exited ? 'from start to exit' : 'so far (it has not exited)';
  if (bad.length) assert.fail(`ringsfu printed ${bad.length} WARN/ERROR line(s) ${upTo}:\n${bad.join('\n')}`);
});

// The demo page served by the binary at `/`: two Chromium pages join the same session through
// it (its own JavaScript client of the OpenVidu 2 protocol, no SDK) and each decodes the other's
// video. A screenshot is kept in target/test-artifacts/demo-page.png.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startServer, until, repoRoot } from './lib/server.mjs';
import { launchChromium } from './lib/browser.mjs';

let server, browser;
before(async () => {
  server = await startServer({ args: ['--set', 'server.demo=true'] });
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Frames decoded so far by the remote (not local) tiles of `page`. */
const remoteFrames = (page) => page.evaluate(() => [...document.querySelectorAll('.tile')]
  .filter((t) => t.dataset.id !== 'local')
  .map((t) => ({
    id: t.dataset.id,
    name: t.querySelector('span').textContent,
    frames: t.querySelector('video').getVideoPlaybackQuality().totalVideoFrames,
    width: t.querySelector('video').videoWidth,
    playing: !t.querySelector('video').paused,
    time: t.querySelector('video').currentTime,
  })));

test('two pages join the demo session and see each other', async () => {
  const pages = [];
  for (const name of ['Ann', 'Ben']) {
    const p = await browser.ctx.newPage();
    await p.goto(`${server.url}/`);
    assert.equal(await p.title(), 'ringsfu demo');
    await p.fill('#session', 'demo-test');
    await p.fill('#user', name);
    await p.click('#join');
    pages.push(p);
  }
  for (const [i, p] of pages.entries()) {
    const other = i === 0 ? 'Ben' : 'Ann';
    await until(async () => (await remoteFrames(p)).find((t) => t.name === other && t.playing && t.width > 0 && t.frames > 30),
      `${other}'s video decoded on page ${i + 1}`, { tries: 300, everyMs: 100 });
  }
  const dir = path.join(repoRoot, 'target', 'test-artifacts');
  fs.mkdirSync(dir, { recursive: true });
  await pages[0].screenshot({ path: path.join(dir, 'demo-page.png') });

  // Ben leaves: Ann's page drops his tile.
  await pages[1].click('#leave');
  await until(async () => (await remoteFrames(pages[0])).length === 0, "Ben's tile removed");
  for (const p of pages) await p.close();
});

test('the token endpoint refuses bad input', async () => {
  const post = (body) => fetch(`${server.url}/demo/token`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body,
  });
  assert.equal((await post('not json')).status, 400);
  assert.equal((await post(JSON.stringify({ session: 'bad name!', user: 'x' }))).status, 400);
  assert.equal((await post(JSON.stringify({ session: 'ok', user: '' }))).status, 400);
  const r = await post(JSON.stringify({ session: 'ok', user: 'Zoe' }));
  assert.equal(r.status, 200);
  assert.match((await r.json()).token, /sessionId=ok&token=tok_/);
});

test('demo = false: no page, no token endpoint', async () => {
  const off = await startServer({ args: ['--set', 'server.demo=false'] });
  try {
    assert.equal((await fetch(`${off.url}/`)).status, 404);
    assert.equal((await fetch(`${off.url}/demo/token`, { method: 'POST', body: '{}' })).status, 404);
  } finally {
    await off.stop();
  }
});

// The demo page served by the binary at `/`: two Chromium pages join the same session through
// it (its own JavaScript client of the OpenVidu 2 protocol, no SDK) and each decodes the other's
// video. The two pages capture different sizes of Chromium's fake camera (640x480 and 320x180,
// different aspect ratios), so each must decode the other's size: a server that looped a page's
// own stream back under the other's name would fail. A screenshot is kept in
// target/test-artifacts/demo-page.png.
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

/** The size each page's camera captures (the demo page asks for 640x480; see sizedCamera). The
 * pages share one fake device, opened at the first page's size: the second one's is cut from it,
 * so it must be the smaller. */
const SIZES = { Ann: [640, 480], Ben: [320, 180] };

/** Runs in the page before its scripts: getUserMedia captures video at exactly `w`x`h`, with
 * contentHint 'detail' (Chromium then keeps the resolution and adapts the frame rate instead,
 * so the size a subscriber decodes is the size captured). */
function sizedCamera([w, h]) {
  const md = navigator.mediaDevices;
  const real = md.getUserMedia.bind(md);
  md.getUserMedia = async (c) => {
    const s = await real({ ...c, video: { width: { exact: w }, height: { exact: h } } });
    for (const t of s.getVideoTracks()) t.contentHint = 'detail';
    return s;
  };
}

/** The tiles of `page` (the local one when `local`, else the remote ones) with what their
 * <video> decoded so far. */
const tiles = (page, local) => page.evaluate((local) => [...document.querySelectorAll('.tile')]
  .filter((t) => (t.dataset.id === 'local') === local)
  .map((t) => ({
    id: t.dataset.id,
    name: t.querySelector('span').textContent,
    frames: t.querySelector('video').getVideoPlaybackQuality().totalVideoFrames,
    width: t.querySelector('video').videoWidth,
    height: t.querySelector('video').videoHeight,
    playing: !t.querySelector('video').paused,
    time: t.querySelector('video').currentTime,
  })), local);
const remoteFrames = (page) => tiles(page, false);

test('two pages join the demo session and see each other', async () => {
  const pages = [];
  for (const name of ['Ann', 'Ben']) {
    const p = await browser.ctx.newPage();
    await p.addInitScript(sizedCamera, SIZES[name]);
    await p.goto(`${server.url}/`);
    assert.equal(await p.title(), 'ringsfu demo');
    await p.fill('#session', 'demo-test');
    await p.fill('#user', name);
    await p.click('#join');
    pages.push(p);
    // The camera opens (at this page's size) before the next page asks for it.
    await until(async () => (await tiles(p, true)).find((t) => t.width > 0),
      `${name}'s camera`, { tries: 300, everyMs: 100 });
  }
  for (const [i, p] of pages.entries()) {
    const [me, other] = i === 0 ? ['Ann', 'Ben'] : ['Ben', 'Ann'];
    const [w, h] = SIZES[other];
    let seen = [];
    try {
      // Bounded: 300 polls, 100 ms apart.
      await until(async () => {
        seen = await remoteFrames(p);
        return seen.find((t) => t.name === other && t.playing && t.frames > 30 && t.width === w && t.height === h);
      }, `${other}'s ${w}x${h} video decoded on ${me}'s page`, { tries: 300, everyMs: 100 });
    } catch (e) {
      const status = await Promise.all(pages.map((q) => q.textContent('#status')));
      throw new Error(`${e.message}; remote tiles: ${JSON.stringify(seen)}; status: ${status}`);
    }
    // The page's own camera has its own size (the wrapper took effect), not the other's.
    const local = await tiles(p, true);
    assert.deepEqual(local.map((t) => [t.width, t.height]), [SIZES[me]], JSON.stringify(local));
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

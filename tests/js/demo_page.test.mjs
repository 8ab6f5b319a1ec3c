// The demo page served by the binary at `/`: two Chromium pages join the same session through
// it (its own JavaScript client of the OpenVidu 2 protocol, no SDK) and each decodes the other's
// video. The two pages capture different sizes of Chromium's fake camera (640x480 and 320x180,
// different aspect ratios), so each must decode the other's size: a server that looped a page's
// own stream back under the other's name would fail. A screenshot is kept in
// target/test-artifacts/demo-page.png.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from './lib/server.mjs';
import { launchChromium } from './lib/browser.mjs';
import { joinDemo, seeEachOther, benLeaves, keepScreenshot } from './lib/demo.mjs';

let server, browser;
before(async () => {
  server = await startServer({ args: ['--set', 'server.demo=true'] });
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

test('two pages join the demo session and see each other', async () => {
  const pages = await joinDemo(browser.ctx, `${server.url}/`, 'demo-test', ['Ann', 'Ben']);
  await seeEachOther(pages);
  await keepScreenshot(pages[0], 'demo-page.png');

  // Ben leaves: Ann's page drops his tile.
  await benLeaves(pages);
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

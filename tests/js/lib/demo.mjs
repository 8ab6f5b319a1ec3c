// Drives the demo page the binary serves at `/` (src/control/demo/) in Chromium pages: join a
// session by name with a camera of a given size, check that each page decodes the others'
// video, leave. Shared by demo_page.test.mjs and readme/first_command.test.mjs.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { until, repoRoot } from './server.mjs';

/** The size each page's camera captures (the demo page asks for 640x480; see sizedCamera). The
 * pages share one fake device, opened at the first page's size: the second one's is cut from it,
 * so it must be the smaller. */
export const SIZES = { Ann: [640, 480], Ben: [320, 180] };

/** Runs in the page before its scripts: getUserMedia captures video at exactly `w`x`h`, with
 * contentHint 'detail' (Chromium then keeps the resolution and adapts the frame rate instead,
 * so the size a subscriber decodes is the size captured). */
export function sizedCamera([w, h]) {
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
export const tiles = (page, local) => page.evaluate((local) => [...document.querySelectorAll('.tile')]
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
export const remoteFrames = (page) => tiles(page, false);

/**
 * Opens one page of Chromium context `ctx` per name in `names` (keys of SIZES) on the demo page
 * at `pageUrl`, each capturing its camera at its size, and joins them to `session`. Returns the
 * pages, in the order of `names`.
 */
export async function joinDemo(ctx, pageUrl, session, names) {
  const pages = [];
  for (const name of names) {
    const p = await ctx.newPage();
    await p.addInitScript(sizedCamera, SIZES[name]);
    await p.goto(pageUrl);
    assert.equal(await p.title(), 'ringsfu demo');
    await p.fill('#session', session);
    await p.fill('#user', name);
    await p.click('#join');
    pages.push(p);
    // The camera opens (at this page's size) before the next page asks for it.
    await until(async () => (await tiles(p, true)).find((t) => t.width > 0),
      `${name}'s camera`, { tries: 300, everyMs: 100 });
  }
  return pages;
}

/** With the pages of joinDemo(…, ['Ann', 'Ben']): each one decodes the other's video at the
 * other's size (more than 30 frames, playing), and its own camera has its own size. */
export async function seeEachOther(pages) {
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
}

/** Ben (the second page) clicks Leave: Ann's page drops his tile. */
export async function benLeaves(pages) {
  await pages[1].click('#leave');
  await until(async () => (await remoteFrames(pages[0])).length === 0, "Ben's tile removed");
}

/** Keeps a screenshot of `page` as target/test-artifacts/`file` (for a look after the run). */
export async function keepScreenshot(page, file) {
  const dir = path.join(repoRoot, 'target', 'test-artifacts');
  fs.mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: path.join(dir, file) });
}

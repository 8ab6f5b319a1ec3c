// Runs inside a network namespace with only `lo`, where the caller made UDP lossy: one
// publisher and one subscriber through ringsfu; prints one JSON line with the subscriber's
// inbound statistics once enough video arrived. Used by browser_media_loss.test.mjs.
import { createRequire } from 'node:module';
import { startServer, until } from './server.mjs';
import { startPageServer, launchChromium } from './browser.mjs';

const require = createRequire(import.meta.url);
const { OpenVidu } = require('openvidu-node-client');

const server = await startServer();
const pages = await startPageServer();
const browser = await launchChromium();
let result;
try {
  const ov = new OpenVidu(server.url, 'MY_SECRET');
  const session = await ov.createSession({ customSessionId: 'lossy' });
  const open = async (name, subscribe) => {
    const token = (await session.createConnection({ data: name })).token;
    const page = await browser.ctx.newPage();
    await page.goto(pages.url);
    await page.evaluate((s) => { window.autoSubscribe = s; }, subscribe);
    await page.evaluate(([t, n]) => window.join(t, n), [token, name]);
    return page;
  };
  const a = await open('pub', false);
  const b = await open('sub', true);
  const streamId = await a.evaluate(() => window.publish());
  // Enough video for a loss ratio to mean something: 800 packets (bounded: 90 s).
  const s = await until(async () => {
    const st = (await b.evaluate(() => window.inboundStats()))[streamId];
    return st && st.videoPackets >= 800 && st;
  }, 'subscriber receives 800 video packets', { tries: 900, everyMs: 100 });
  result = { ok: true, stats: s };
  // LOSS_SCENARIO_SECONDS (tools/loss_freezes.sh): also a window of that many seconds from
  // here, its stats at the end (freezes counted over the window by the caller).
  const windowS = Number(process.env.LOSS_SCENARIO_SECONDS || 0);
  if (windowS > 0) {
    await new Promise((r) => setTimeout(r, windowS * 1000));
    result.end = (await b.evaluate(() => window.inboundStats()))[streamId];
    result.window = windowS;
  }
  await server.stop();
  result.logs = server.logs().slice(-3000);
} catch (e) {
  result = { ok: false, error: String(e), logs: server.logs().slice(-4000) };
} finally {
  await browser.close();
  await pages.close();
  await server.stop();
}
console.log(`RESULT ${JSON.stringify(result)}`);

// Exploratory (not a test): one 1280x720 simulcast publisher, one subscriber; prints stats.
import { createRequire } from 'node:module';
import { startServer } from './lib/server.mjs';
import { startPageServer, launchChromium, joinPage } from './lib/browser.mjs';
const require = createRequire(import.meta.url);
const { OpenVidu } = require('openvidu-node-client');
const server = await startServer({ env: { OPENVIDU_WEBRTC_SIMULCAST: 'true', RUST_LOG: process.env.RL || 'info' } });
const pages = await startPageServer();
const browser = await launchChromium();
try {
  const ov = new OpenVidu(server.url, 'MY_SECRET');
  const session = await ov.createSession();
  const pub = await joinPage(browser, pages, session, 'pub', { subscribe: false });
  const sid = await pub.page.evaluate(async () => {
    const p = await window.OV.initPublisherAsync(undefined, { publishAudio: true, publishVideo: true, resolution: '1280x720', frameRate: 30 });
    window.publisher = p;
    await window.session.publish(p);
    return p.stream.streamId;
  });
  const sub = await joinPage(browser, pages, session, 'sub', { subscribe: true });
  for (let i = 0; i < Number(process.env.SECS || 20); i++) {
    await new Promise((r) => setTimeout(r, 1000));
    const st = await sub.page.evaluate(async () => {
      const out = [];
      for (const s of Object.values(window.subscribers)) {
        const pc = s.stream.getRTCPeerConnection();
        (await pc.getStats()).forEach((x) => { if (x.type === 'inbound-rtp' && x.kind === 'video') out.push({ w: x.frameWidth, h: x.frameHeight, fps: x.framesPerSecond, dec: x.framesDecoded, lost: x.packetsLost, nack: x.nackCount, freeze: x.freezeCount, fdur: x.totalFreezesDuration, pli: x.pliCount }); });
      }
      return out;
    });
    const ps = await pub.page.evaluate(async () => {
      const pc = window.publisher.stream.getRTCPeerConnection();
      const out = [];
      (await pc.getStats()).forEach((x) => { if (x.type === 'outbound-rtp' && x.kind === 'video') out.push(`${x.rid}:${x.frameWidth}x${x.frameHeight}@${x.framesPerSecond} ${x.qualityLimitationReason} ${Math.round((x.targetBitrate||0)/1000)}k`); });
      return out.join(' | ');
    });
    const m = await (await fetch(`${server.url}/metrics`, { headers: { Authorization: 'Basic ' + Buffer.from('OPENVIDUAPP:MY_SECRET').toString('base64') } })).text();
    const rows = m.split('\n').filter((l) => l.startsWith('ringsfu_consumer_') || /ringsfu_shard_(layer|probe|rtx_o|rtx_t|pli)/.test(l)).join(' ; ');
    console.log(i, JSON.stringify(st), '\n   pub:', ps, '\n   ', rows.replace(/shard="0",/g, ''));
  }
  console.log(sid);
} finally {
  await browser.close(); await pages.close(); await server.stop();
  if (process.env.LOGS) console.log(server.logs().slice(-5000));
}

// Helpers for tests that check real recordings: a webhook receiver, the publisher's outbound
// video stats sampled in the page, the recording's zip fetched and unzipped (Debian's `unzip`),
// its media files read by `ffprobe` and `mkvinfo`, and a WebM played back in Chromium.
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { basicAuth } from './server.mjs';

/** A loopback HTTP server collecting the JSON bodies POSTed to it (OpenVidu's webhook).
 * Returns { url, events, close() }. */
export async function startWebhookReceiver() {
  const events = [];
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      try { events.push(JSON.parse(body)); } catch { events.push({ unparsable: body }); }
      res.writeHead(200);
      res.end();
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${srv.address().port}/hook`,
    events,
    close: () => new Promise((r) => srv.close(r)),
  };
}

/**
 * Installs in `page` (which has `window.publisher`) a sampler of the publisher's outbound video
 * stats every `everyMs`: `window.pubSamples` gets { at, pc, framesSent, keyFramesEncoded }, `pc`
 * numbering the peer connections seen (a reconnection makes a new one, whose counters restart
 * at zero). `window.sampleNow()` takes one sample at once and returns it.
 */
export async function startPublisherSampler(page, everyMs = 15) {
  await page.evaluate((every) => {
    window.pubSamples = [];
    const pcs = new WeakMap();
    let n = 0;
    window.sampleNow = async () => {
      const pc = window.publisher.stream.getRTCPeerConnection();
      if (!pcs.has(pc)) pcs.set(pc, n++);
      const stats = await pc.getStats();
      const s = { at: Date.now(), pc: pcs.get(pc), framesSent: 0, keyFramesEncoded: 0 };
      stats.forEach((r) => {
        if (r.type === 'outbound-rtp' && r.kind === 'video') {
          s.framesSent += r.framesSent || 0;
          s.keyFramesEncoded += r.keyFramesEncoded || 0;
        }
      });
      window.pubSamples.push(s);
      return s;
    };
    let busy = false;
    window.samplerTimer = setInterval(async () => {
      if (busy) return;
      busy = true;
      try { await window.sampleNow(); } catch { /* peer connection being replaced */ }
      busy = false;
    }, every);
  }, everyMs);
}

/**
 * From a publisher's samples (one peer connection): the framesSent count just before the first
 * keyframe encoded after `sinceMs` (page clock), and when that keyframe was seen. A recording
 * starts at the first keyframe after it was asked for (the recorder's PLI), so the frames the
 * file can hold are those sent from that keyframe on. null if no keyframe followed.
 */
export function firstKeyframeAfter(samples, sinceMs, pc = 0) {
  const own = samples.filter((s) => s.pc === pc);
  const base = own.filter((s) => s.at <= sinceMs).at(-1) ?? { framesSent: 0, keyFramesEncoded: 0 };
  for (let i = 0; i < own.length; i++) {
    if (own[i].at > sinceMs && own[i].keyFramesEncoded > base.keyFramesEncoded) {
      const before = i > 0 && own[i - 1].at >= base.at ? own[i - 1] : base;
      return { framesBefore: before.framesSent, at: own[i].at, atBefore: before.at ?? sinceMs };
    }
  }
  return null;
}

/** GETs `/openvidu/recordings/<id>/<name>.zip` (Basic auth) and unzips it into a fresh
 * directory; returns { dir, zipBytes, entries: { name: size } }. */
export async function fetchAndUnzip(serverUrl, id, name) {
  const r = await fetch(`${serverUrl}/openvidu/recordings/${id}/${name}.zip`, {
    headers: { Authorization: basicAuth() },
  });
  if (r.status !== 200) throw new Error(`GET ${name}.zip: ${r.status}`);
  const bytes = Buffer.from(await r.arrayBuffer());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringsfu-js-unzip-'));
  const zip = path.join(dir, `${name}.zip`);
  fs.writeFileSync(zip, bytes);
  const out = path.join(dir, 'x');
  execFileSync('unzip', ['-q', '-o', zip, '-d', out]);
  const entries = {};
  for (const f of fs.readdirSync(out)) entries[f] = fs.statSync(path.join(out, f)).size;
  return { dir: out, zipBytes: bytes.length, entries, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** `ffprobe -count_frames` of `file`: { video, audio, duration, format } (streams as ffprobe
 * reports them; `duration` in seconds). Throws if ffprobe reports any error. */
export function ffprobe(file) {
  const out = execFileSync('ffprobe', [
    '-v', 'error', '-count_frames', '-show_streams', '-show_format', '-of', 'json', file,
  ], { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 16 << 20 });
  const j = JSON.parse(out.toString());
  return {
    video: j.streams.find((s) => s.codec_type === 'video'),
    audio: j.streams.find((s) => s.codec_type === 'audio'),
    duration: Number(j.format.duration),
    format: j.format,
  };
}

/** Decodes every frame of `file` with ffmpeg and returns its error output ('' when clean). */
export function ffmpegDecodeErrors(file) {
  const r = execFileSync('ffmpeg', ['-v', 'error', '-nostdin', '-i', file, '-f', 'null', '-'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return r.toString();
}

/** `mkvinfo -a` of `file`: { clusters, cues, firstBlocks } where firstBlocks are the first
 * "Simple block" lines of each cluster (video is track 1). */
export function mkvinfo(file) {
  const text = execFileSync('mkvinfo', ['-a', file], { maxBuffer: 64 << 20 }).toString();
  let clusters = 0;
  let expectFirst = false;
  const firstBlocks = [];
  for (const line of text.split('\n')) {
    if (line.replace(/^\|+/, '').trim() === '+ Cluster') {
      clusters++;
      expectFirst = true;
    } else if (expectFirst && line.includes('Simple block')) {
      expectFirst = false;
      firstBlocks.push(line.trim());
    }
  }
  const cues = text.split('+ Cue point').length - 1;
  return { clusters, cues, firstBlocks, text };
}

/**
 * Plays the media file `file` (`mime`) muted in a new page of `browser` from a blob: URL made of
 * its bytes, at 4x for up to `forMs`; returns { frames (requestVideoFrameCallback count),
 * totalVideoFrames, width, height, duration, error }.
 */
export async function playInChromium(browser, pageUrl, file, mime, forMs = 2000) {
  const page = await browser.ctx.newPage();
  try {
    await page.goto(pageUrl);
    const b64 = fs.readFileSync(file).toString('base64');
    return await page.evaluate(async ([data, type, ms]) => {
      const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
      const v = document.createElement('video');
      v.muted = true;
      v.src = URL.createObjectURL(new Blob([bytes], { type }));
      document.body.append(v);
      let frames = 0;
      const cb = () => { frames++; v.requestVideoFrameCallback(cb); };
      v.requestVideoFrameCallback(cb);
      let error = null;
      try {
        v.playbackRate = 4;
        await v.play();
        await new Promise((res) => {
          v.onended = res;
          v.onerror = res;
          setTimeout(res, ms);
        });
      } catch (e) { error = String(e); }
      if (v.error) error = `${v.error.code} ${v.error.message}`;
      return {
        frames, totalVideoFrames: v.getVideoPlaybackQuality().totalVideoFrames,
        width: v.videoWidth, height: v.videoHeight, duration: v.duration, error,
      };
    }, [b64, mime, forMs]);
  } finally {
    await page.close();
  }
}

// A fake IP camera for the IPCAM tests: tests/js/lib/rtsp_camera.py (GStreamer's RTSP server
// through Debian's Python bindings) on a loopback port, serving H.264 + PCMU it generates, and
// reporting its RTSP clients and sessions line by line.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, until } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const script = path.join(here, 'rtsp_camera.py');

/** Debian's python3 (the one python3-gi is installed for), whatever comes first in PATH. */
const python = () => process.env.RINGSFU_GST_PYTHON || '/usr/bin/python3';

/**
 * Starts the camera on `port` (a free one when not given); `args`: extra script flags
 * (`--audio aac`, `--profile high`). Resolves once it listens. Returns { port, uri, events,
 * lines(), sessionsStarted(), sessionsEnded(), kill(), stop() }; `events` are the parsed lines
 * ({ kind, n, at }) and survive the process.
 */
export async function startCamera({ port, args = [] } = {}) {
  port = port || await freePort();
  const events = [];
  const out = [];
  const proc = spawn(python(), [script, String(port), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let exited = null;
  proc.on('exit', (code, sig) => { exited = { code, sig }; });
  let buf = '';
  proc.stdout.on('data', (d) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      out.push(line);
      const [kind, n] = line.split(' ');
      events.push({ kind, n: Number(n), at: Date.now() });
    }
  });
  proc.stderr.on('data', (d) => out.push(d.toString()));
  await until(() => {
    if (exited) throw new Error(`rtsp_camera.py exited ${JSON.stringify(exited)}:\n${out.join('\n')}`);
    return events.some((e) => e.kind === 'READY');
  }, 'the RTSP camera listening', { tries: 200, everyMs: 50 });
  const count = (kind) => events.filter((e) => e.kind === kind).length;
  return {
    port,
    uri: `rtsp://127.0.0.1:${port}/cam`,
    events,
    lines: () => out.join('\n'),
    sessionsStarted: () => count('SESSION-START'),
    sessionsEnded: () => count('SESSION-END'),
    /** Kills it at once (SIGKILL: the camera vanishes mid-stream, no TEARDOWN, no FIN-wait). */
    async kill() {
      if (exited) return;
      proc.kill('SIGKILL');
      await until(() => exited, 'the camera gone');
    },
    async stop() {
      if (exited) return;
      proc.kill('SIGTERM');
      await until(() => exited, 'the camera stopped').catch(() => proc.kill('SIGKILL'));
    },
  };
}

// Starts the real ringsfu binary on a free loopback port for one test file, and stops it.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..', '..');
export const SECRET = 'MY_SECRET';

/** The binary under test: RINGSFU_BIN, else the debug build in CARGO_TARGET_DIR (or target/). */
export function ringsfuBin() {
  const target = process.env.CARGO_TARGET_DIR || path.join(repoRoot, 'target');
  return process.env.RINGSFU_BIN || path.join(target, 'debug', 'ringsfu');
}

// Ports handed out by freePort in this process: the kernel may give the same ephemeral port to
// two binds in a row once the first socket is closed, and a server told to use one port twice
// (HTTP and TURN) refuses its configuration.
const handedOut = new Set();

/** A loopback port that was free when checked and not handed out before by this process. */
export async function freePort() {
  for (let i = 0; i < 100; i++) {
    const port = await new Promise((resolve, reject) => {
      const srv = net.createServer();
      srv.on('error', reject);
      srv.listen(0, '127.0.0.1', () => {
        const { port } = srv.address();
        srv.close(() => resolve(port));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error('no fresh port in 100 tries');
}

export function basicAuth(secret = SECRET) {
  return 'Basic ' + Buffer.from(`OPENVIDUAPP:${secret}`).toString('base64');
}

// The server sees the test's environment minus the harness's own variables.
function serverEnv(extra) {
  const env = { ...process.env, RUST_BACKTRACE: '1', ...extra };
  delete env.RINGSFU_BIN;
  return env;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts ringsfu with `args` (extra CLI flags) and `env`; resolves once the REST API answers.
 * `wrapper`: a command (program and arguments) that runs the binary and its arguments, appended
 * to it, and must exec it (so the child's pid stays the server's), e.g. `unshare --mount ...`.
 * Returns { url, port, mediaPort, turnPort, proc, logs(), stop() }: `mediaPort` is
 * `media.port_base` (media shard `i` listens on `mediaPort + i`) unless `args` sets it again.
 */
export async function startServer({ args = [], env = {}, tls = false, wrapper = [], host } = {}) {
  const port = await freePort();
  const mediaPort = await freePort();
  const turnPort = await freePort();
  const logs = [];
  const [program, ...pre] = [...wrapper, ringsfuBin()];
  const proc = spawn(
    program,
    [
      ...pre,
      '--port', String(port),
      '--set', `media.port_base=${mediaPort}`,
      '--set', 'media.shards=1',
      '--set', `turn.port=${turnPort}`,
      // SIGTERM drains while participants remain (default 30 s); stop() waits 10 s at most.
      '--set', 'server.drain_timeout=1',
      // `host`: the server's own loopback address (several servers side by side)
      ...(host ? ['--set', `server.address=${host}`, '--set', `media.bind_address=${host}`] : []),
      ...args,
    ],
    { env: serverEnv(env), stdio: ['ignore', 'pipe', 'pipe'] },
  );
  proc.stdout.on('data', (d) => logs.push(d.toString()));
  proc.stderr.on('data', (d) => logs.push(d.toString()));
  let exited = null;
  proc.on('exit', (code, sig) => { exited = { code, sig }; });
  const url = `${tls ? 'https' : 'http'}://${host || '127.0.0.1'}:${port}`;
  // Bounded wait for readiness: 200 attempts x 50 ms.
  for (let i = 0; i < 200; i++) {
    if (exited) throw new Error(`ringsfu exited early ${JSON.stringify(exited)}:\n${logs.join('')}`);
    try {
      const r = await fetch(`${url}/openvidu/api/config/openvidu-publicurl`);
      if (r.status === 200) break;
    } catch { /* not listening yet */ }
    if (i === 199) throw new Error(`ringsfu did not start:\n${logs.join('')}`);
    await sleep(50);
  }
  return {
    url,
    port,
    mediaPort,
    turnPort,
    proc,
    logs: () => logs.join(''),
    async stop() {
      if (!exited) {
        proc.kill('SIGTERM');
        for (let i = 0; i < 200 && !exited; i++) await sleep(50);
        if (!exited) proc.kill('SIGKILL');
      }
      // RINGSFU_TEST_LOG_DIR: keep the server's output (debugging a failed run).
      if (process.env.RINGSFU_TEST_LOG_DIR) {
        const f = path.join(process.env.RINGSFU_TEST_LOG_DIR, `ringsfu-${port}.log`);
        fs.writeFileSync(f, logs.join(''));
      }
      return exited;
    },
  };
}

/** Polls `fn` until it returns a truthy value; bounded by `tries` x `everyMs`. */
export async function until(fn, what, { tries = 200, everyMs = 50 } = {}) {
  for (let i = 0; i < tries; i++) {
    const v = await fn();
    if (v) return v;
    await sleep(everyMs);
  }
  throw new Error(`timed out waiting for ${what}`);
}

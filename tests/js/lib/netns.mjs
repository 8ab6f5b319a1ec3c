// Network namespaces joined to the test's own by veth pairs, for browsers behind their own
// (optionally rate-limited) link to the server. Every command is bounded in time; whatever a
// test creates it deletes (`destroy`), and a process exit deletes what is left.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { launchChromium, chromiumPath } from './browser.mjs';

/** Runs `cmd` with sh (at most `timeout` ms); throws with its output when it fails. */
export function sh(cmd, { timeout = 10_000 } = {}) {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8', timeout });
  if (r.status !== 0) {
    throw new Error(`\`${cmd}\` failed (exit ${r.status}, signal ${r.signal}): ${r.stderr}${r.stdout}`);
  }
  return r.stdout;
}

const live = new Set();
process.on('exit', () => {
  for (const ns of live) ns.destroy();
});

/** Why namespaces cannot be made here (a string), or null when they can. */
export function netnsUnavailable() {
  if (process.getuid && process.getuid() !== 0) return 'not root: cannot create network namespaces';
  for (const tool of ['ip', 'tc']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `${tool} (iproute2) missing`;
  }
  const name = `rsfuprobe${process.pid}`;
  const r = spawnSync('sh', ['-c', `ip netns add ${name} && ip netns del ${name}`], { timeout: 10_000 });
  if (r.status !== 0) return `ip netns add not permitted: ${r.stderr}`;
  return null;
}

/**
 * A namespace `rsfu<pid>n<index>` with one end of a veth pair, `10.<net>.<index>.2/24`, a
 * default route to the other end, `10.<net>.<index>.1/24`, here. Returns
 * { name, hostIf, hostAddr, nsAddr, limit(rate), unlimit(), qdisc(), destroy() }; `limit`
 * puts a tbf on this side of the pair (what the server sends into the namespace).
 */
export function createNetns(index, net8 = 100 + (process.pid % 100)) {
  const name = `rsfu${process.pid}n${index}`;
  const hostIf = `rsfu${process.pid % 100000}h${index}`;
  const peerIf = `rsfu${process.pid % 100000}p${index}`;
  const hostAddr = `10.${net8}.${index}.1`;
  const nsAddr = `10.${net8}.${index}.2`;
  const ns = {
    name, hostIf, hostAddr, nsAddr,
    limit(rate = '300kbit') {
      sh(`tc qdisc replace dev ${hostIf} root tbf rate ${rate} burst 16kb latency 200ms`);
    },
    unlimit() {
      spawnSync('sh', ['-c', `tc qdisc del dev ${hostIf} root`], { timeout: 10_000 });
    },
    qdisc() {
      return sh(`tc -s qdisc show dev ${hostIf}`);
    },
    destroy() {
      spawnSync('sh', ['-c', `ip link del ${hostIf}; ip netns del ${name}`], { timeout: 10_000 });
      live.delete(ns);
    },
  };
  live.add(ns);
  try {
    sh([
      `ip netns add ${name}`,
      `ip link add ${hostIf} type veth peer name ${peerIf}`,
      `ip link set ${peerIf} netns ${name}`,
      `ip addr add ${hostAddr}/24 dev ${hostIf}`,
      `ip link set ${hostIf} up`,
      `ip -n ${name} link set lo up`,
      `ip -n ${name} addr add ${nsAddr}/24 dev ${peerIf}`,
      `ip -n ${name} link set ${peerIf} up`,
      `ip -n ${name} route add default via ${hostAddr}`,
    ].join(' && '));
  } catch (e) {
    ns.destroy();
    throw e;
  }
  return ns;
}

/** Headless Chromium running inside namespace `ns` (a wrapper script execs it through
 * `ip netns exec`, so the browser's pid is the one playwright started); `args`: extra flags. */
export async function chromiumIn(ns, { args = [] } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringsfu-netns-'));
  const wrapper = path.join(dir, 'chromium');
  fs.writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns.name} ${JSON.stringify(chromiumPath())} "$@"\n`, { mode: 0o755 });
  const b = await launchChromium({ executablePath: wrapper, args });
  return {
    ...b,
    async close() {
      await b.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A TCP forwarder listening on `host` (any free port) to `127.0.0.1:port`: the loopback page
 * server reachable from the namespaces. Returns { url, close() }. */
export async function tcpForward(host, port) {
  const socks = new Set();
  const srv = net.createServer((c) => {
    const up = net.connect(Number(port), '127.0.0.1');
    socks.add(c);
    socks.add(up);
    c.pipe(up);
    up.pipe(c);
    const done = () => { c.destroy(); up.destroy(); socks.delete(c); socks.delete(up); };
    c.on('error', done);
    up.on('error', done);
    c.on('close', done);
    up.on('close', done);
  });
  await new Promise((r) => srv.listen(0, host, r));
  return {
    url: `http://${host}:${srv.address().port}/`,
    close: () => new Promise((r) => { for (const s of socks) s.destroy(); srv.close(r); }),
  };
}

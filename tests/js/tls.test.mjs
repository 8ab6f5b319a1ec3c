// HTTPS and WSS: a self-signed certificate generated at start-up, and an operator's own
// certificate and key, with the unmodified openvidu-node-client.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { startServer } from './lib/server.mjs';

const require = createRequire(import.meta.url);
const { OpenVidu } = require('openvidu-node-client');

// The certificates here are not from a CA the test trusts: check them by fingerprint instead.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';

function servedCertificate(port) {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      const cert = s.getPeerX509Certificate();
      s.end();
      resolve(cert);
    });
    s.on('error', reject);
  });
}

test('self-signed certificate (CERTIFICATE_TYPE=selfsigned)', async () => {
  const server = await startServer({ env: { CERTIFICATE_TYPE: 'selfsigned' }, tls: true });
  try {
    const ov = new OpenVidu(server.url, 'MY_SECRET');
    const s = await ov.createSession();
    const c = await s.createConnection();
    assert.match(c.token, /^wss:\/\/127\.0\.0\.1:\d+\?sessionId=/, 'tokens use wss://');
    const cert = await servedCertificate(server.port);
    assert.ok(cert.checkHost('localhost'), `served certificate is for localhost: ${cert.subjectAltName}`);
    await s.close();
  } finally {
    assert.equal((await server.stop()).code, 0);
  }
});

test("operator's own certificate and key", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ringsfu-tls-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=ringsfu-test.example',
    '-addext', 'subjectAltName=DNS:ringsfu-test.example,IP:127.0.0.1',
  ], { stdio: 'ignore' });
  const server = await startServer({
    args: ['--set', 'tls.enabled=true', '--set', `tls.cert=${cert}`, '--set', `tls.key=${key}`],
    tls: true,
  });
  try {
    const served = await servedCertificate(server.port);
    const mine = new crypto.X509Certificate(fs.readFileSync(cert));
    assert.equal(served.fingerprint256, mine.fingerprint256);
    const ov = new OpenVidu(server.url, 'MY_SECRET');
    const s = await ov.createSession({ customSessionId: 'tls-room' });
    assert.equal(s.sessionId, 'tls-room');
    await s.close();
  } finally {
    assert.equal((await server.stop()).code, 0);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// openvidu-browser 2.32.2 in headless Chromium, forced to relay-only ICE (iceTransportPolicy
// 'relay', as an application behind a strict firewall would set it), publishes and subscribes
// through ringsfu's own TURN server, using the TURN credentials ringsfu hands out in joinRoom.
// Three times: with the relayed datagrams handed to the media core inside the process (the
// default), through the kernel (`turn.deliver_in_process = false`), and in-process without the
// session's shard TURN port offered (`turn.shard_ports = false`: only the shared TURN port, which
// the kernel spreads over the shards). Then once without forcing relay: with the shard's TURN
// port offered, the browsers still choose the direct host pair.
// Every candidate pair in use must be a relayed one, and ringsfu's /metrics must show the
// allocations and the relayed packets. The TURN peer policy is the default one: the server's own
// (here loopback) addresses are denied as peers except for its media ports.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { startServer, until, basicAuth } from './lib/server.mjs';
import { startPageServer, launchChromium, joinPage, mediaFlows } from './lib/browser.mjs';

const require = createRequire(import.meta.url);
const { OpenVidu } = require('openvidu-node-client');

let server, pages, browser;
before(async () => {
  pages = await startPageServer();
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
  await pages?.close();
  await server?.stop();
});

function serverArgs(deliverInProcess, shardPorts) {
  return [
    '--set', `media.io_backend=${process.env.RINGSFU_IO_BACKEND || 'auto'}`,
    // Default peer policy: loopback peers are denied (allow_loopback_peers is off), but the
    // relay's peer here is ringsfu's own media port on 127.0.0.1, which the policy opens.
    '--set', 'turn.public_ip=127.0.0.1',
    '--set', 'turn.relay_ips=["127.0.0.1"]',
    '--set', 'media.public_ips=["127.0.0.1"]',
    '--set', `turn.deliver_in_process=${deliverInProcess}`,
    '--set', `turn.shard_ports=${shardPorts}`,
  ];
}

// Runs before openvidu-browser: every RTCPeerConnection it creates is kept in window.pcs with the
// configuration it was given, relay-only when `policy` is 'relay'.
// TURN over UDP only (joinRoom also hands out a TCP URL, served by ringsfu's TCP/TLS thread,
// which a browser may pick): the UDP side runs in the media shard, where in-process delivery is.
function recordPeerConnections(policy) {
  const Native = window.RTCPeerConnection;
  window.pcs = [];
  window.pcConfigs = [];
  window.RTCPeerConnection = class extends Native {
    constructor(cfg, ...rest) {
      const iceServers = ((cfg && cfg.iceServers) || []).map((s) => ({
        ...s,
        urls: [].concat(s.urls).filter((u) => !u.includes('transport=tcp')),
      })).filter((s) => s.urls.length > 0);
      const forced = { ...(cfg || {}), iceServers };
      if (policy) forced.iceTransportPolicy = policy;
      super(forced, ...rest);
      window.pcs.push(this);
      window.pcConfigs.push(JSON.parse(JSON.stringify(forced)));
    }
  };
}

// For every peer connection that is connected: the types of the local and remote candidates of
// the selected pair, and the local candidate's relay protocol.
async function selectedPairs(page) {
  return page.evaluate(async () => {
    const out = [];
    for (const pc of window.pcs) {
      if (pc.connectionState !== 'connected') continue;
      const st = await pc.getStats();
      st.forEach((t) => {
        if (t.type !== 'transport' || !t.selectedCandidatePairId) return;
        const pair = st.get(t.selectedCandidatePairId);
        const local = pair && st.get(pair.localCandidateId);
        const remote = pair && st.get(pair.remoteCandidateId);
        out.push({
          local: local && local.candidateType,
          relayProtocol: local && local.relayProtocol,
          url: local && local.url,
          remote: remote && remote.candidateType,
          bytesSent: pair.bytesSent,
          bytesReceived: pair.bytesReceived,
        });
      });
    }
    return out;
  });
}

// Init scripts (page sources): every peer connection relay-only, or only recorded.
const forceRelay = `(${recordPeerConnections})('relay');`;
const recordOnly = `(${recordPeerConnections})(null);`;

// Waits (bounded) until the publisher's page and the subscriber's page each have a selected
// candidate pair, then calls `check(description, pair)` for every one.
async function eachSelectedPair(publisher, subscriber, check) {
  for (const [who, p] of [['publisher', publisher], ['subscriber', subscriber]]) {
    const pairs = await until(async () => {
      const ps = await selectedPairs(p);
      return ps.length > 0 && ps;
    }, `${who}: a selected candidate pair`);
    console.log(`${who} selected pairs: ${JSON.stringify(pairs)}`);
    for (const pair of pairs) check(`${who}: ${JSON.stringify(pair)}`, pair);
  }
}

const join = (session, name, subscribe, initScript = forceRelay) =>
  joinPage(browser, pages, session, name, { subscribe, initScript });

async function scrape() {
  const r = await fetch(`${server.url}/metrics`, { headers: { Authorization: basicAuth() } });
  assert.equal(r.status, 200);
  return r.text();
}

// Sum of every sample of `name` whose labels contain `match`.
function sum(text, name, match = '') {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') || !line.includes(match)) continue;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

async function relayOnly(deliverInProcess, shardPorts = true) {
  await server?.stop();
  server = await startServer({ args: serverArgs(deliverInProcess, shardPorts) });
  const ov = new OpenVidu(server.url, 'MY_SECRET');
  const session = await ov.createSession({ customSessionId: 'relay-room' });
  const a = await join(session, 'Alice', false);
  const streamId = await a.page.evaluate(() => window.publish());
  const b = await join(session, 'Bob', true);

  // The ICE servers openvidu-browser used came from joinRoom: ringsfu's TURN, with credentials.
  const cfg = (await a.page.evaluate(() => window.pcConfigs))[0];
  assert.equal(cfg.iceTransportPolicy, 'relay');
  const turnUrls = cfg.iceServers.flatMap((s) => s.urls);
  assert.ok(turnUrls.some((u) => u.startsWith('turn:127.0.0.1:')), JSON.stringify(cfg.iceServers));
  assert.ok(cfg.iceServers.every((s) => s.username && s.credential), 'TURN credentials handed out');
  // With shard_ports, the first TURN server is the session's shard port (a port other than the
  // shared TURN port, which follows it).
  const udpPorts = [...new Set(turnUrls.map((u) => u.split(':')[2]))];
  assert.equal(udpPorts.length, shardPorts ? 2 : 1, JSON.stringify(turnUrls));
  const shardTurnUrl = shardPorts ? turnUrls[0] : null;

  // Media flows: B decodes A's video and receives its audio, and both keep growing.
  const later = await mediaFlows(b.page, streamId, 'B over TURN');
  console.log(`relay-only subscriber stats: ${JSON.stringify(later)}`);

  // Both sides use a relayed local candidate (their only kind) towards ringsfu's host candidate.
  await eachSelectedPair(a.page, b.page, (what, pair) => {
    assert.equal(pair.local, 'relay', what);
    assert.equal(pair.relayProtocol, 'udp', what);
    assert.equal(pair.remote, 'host', what);
    assert.ok(pair.bytesSent > 0 && pair.bytesReceived > 0, what);
    // The relayed candidate Chromium chose is the one from the shard's TURN port (the first
    // TURN server: the highest relay preference).
    if (shardTurnUrl) assert.equal(pair.url.split('?')[0], shardTurnUrl, what);
  });

  // ringsfu's TURN server saw both allocations and relays in both directions (its counters are
  // published once a second).
  const m = await until(async () => {
    const t = await scrape();
    const ok = sum(t, 'ringsfu_turn_allocations') >= 2
      && sum(t, 'ringsfu_turn_relayed_packets_total', 'direction="to_peer"') > 100
      && sum(t, 'ringsfu_turn_relayed_packets_total', 'direction="to_client"') > 100;
    return ok && t;
  }, 'TURN allocations and relayed packets in /metrics', { tries: 100, everyMs: 100 });
  console.log(`TURN: allocations ${sum(m, 'ringsfu_turn_allocations')}, relayed to peer `
    + `${sum(m, 'ringsfu_turn_relayed_packets_total', 'direction="to_peer"')}, to client `
    + `${sum(m, 'ringsfu_turn_relayed_packets_total', 'direction="to_client"')}`);
  assert.equal(sum(m, 'ringsfu_turn_drops_total', 'reason="turn_peer_denied"'), 0);
  // Both directions were handed between the TURN and media cores of the shard without the
  // kernel, or (deliver_in_process = false) none was.
  const toMedia = sum(m, 'ringsfu_turn_in_process_total', 'direction="to_media"');
  const toClient = sum(m, 'ringsfu_turn_in_process_total', 'direction="to_client"');
  console.log(`in-process (deliver_in_process=${deliverInProcess}): to media ${toMedia}, to client ${toClient}`);
  if (deliverInProcess) {
    assert.ok(toMedia > 100 && toClient > 100, `in-process ${toMedia} / ${toClient}`);
    // The media core wrote every datagram behind room for the TURN header: none was moved.
    assert.equal(sum(m, 'ringsfu_turn_in_process_moved_total'), 0);
    // Allocations through the TURN port of the session's shard reach only its media port: they
    // hold no relay socket (the shared port's allocations may, if they landed elsewhere).
    console.log(`relay sockets open: ${sum(m, 'ringsfu_turn_relay_sockets')}`);
  } else {
    assert.equal(toMedia + toClient, 0);
  }

  for (const p of [a.page, b.page]) {
    assert.deepEqual(await p.evaluate(() => window.events.filter((e) => e.type === 'exception')), []);
    await p.close();
  }
}

test('relay-only publisher and subscriber through ringsfu TURN, delivered in-process', async () => {
  await relayOnly(true);
});

test('relay-only publisher and subscriber through ringsfu TURN, through the kernel', async () => {
  await relayOnly(false);
});

test('relay-only through the shared TURN port only (shard_ports off), in-process', async () => {
  await relayOnly(true, false);
});

// A TURN server at the SFU's own media address would capture the direct path in Chromium (its
// shared UDP socket hands every packet from a TURN server's address to the TURN client): the
// shard's TURN port is a port of its own, so with it offered the host pair still wins.
test('not forced to relay: the direct host pair is chosen with the shard TURN port offered', async () => {
  await server?.stop();
  server = await startServer({ args: serverArgs(true, true) });
  const ov = new OpenVidu(server.url, 'MY_SECRET');
  const session = await ov.createSession({ customSessionId: 'direct-room' });
  const a = await join(session, 'Alice', false, recordOnly);
  const streamId = await a.page.evaluate(() => window.publish());
  const b = await join(session, 'Bob', true, recordOnly);
  await mediaFlows(b.page, streamId, 'B direct');
  await eachSelectedPair(a.page, b.page, (what, pair) => {
    assert.equal(pair.local, 'host', what);
    assert.equal(pair.remote, 'host', what);
  });
  for (const p of [a.page, b.page]) await p.close();
});

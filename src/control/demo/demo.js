// ringsfu demo client: joins a session, publishes the camera and microphone and shows everyone
// else, speaking the OpenVidu 2 WebSocket JSON-RPC protocol directly (no SDK).
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const state = {
    rpc: null, me: null, iceServers: [], names: {}, subs: {}, pub: null, local: null,
  };
  window.ringsfuDemo = state;

  const setStatus = (s) => { $('status').textContent = s; };

  // JSON-RPC 2.0 over the WebSocket, with the keepalive pings openvidu-browser sends.
  class Rpc {
    constructor(url, onNotification, onClose) {
      this.ws = new WebSocket(url);
      this.next = 0;
      this.pending = new Map();
      this.opened = new Promise((resolve, reject) => {
        this.ws.onopen = resolve;
        this.ws.onerror = () => reject(new Error('WebSocket error'));
      });
      this.ws.onmessage = (e) => {
        let m;
        try { m = JSON.parse(e.data); } catch { return; }
        if (m.method) { onNotification(m.method, m.params || {}); return; }
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        if (m.error) p.reject(Object.assign(new Error(m.error.message), { code: m.error.code }));
        else p.resolve(m.result);
      };
      this.ws.onclose = () => {
        clearInterval(this.timer);
        for (const p of this.pending.values()) p.reject(new Error('connection closed'));
        this.pending.clear();
        onClose();
      };
    }
    call(method, params = {}) {
      const id = this.next++;
      this.ws.send(JSON.stringify({ jsonrpc: '2.0', method, params, id }));
      return new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
    }
    startPings() {
      this.call('ping', { interval: 5000 }).catch(() => {});
      this.timer = setInterval(() => this.call('ping').catch(() => {}), 5000);
    }
    close() {
      clearInterval(this.timer);
      if (this.ws.readyState === WebSocket.OPEN) this.ws.close(4102, 'Connection closed by client');
    }
  }

  // "{\"clientData\":\"Ann\"}%/%Ann" -> "Ann"
  function nameOf(metadata) {
    const first = String(metadata || '').split('%/%')[0];
    try { return JSON.parse(first).clientData || first; } catch { return first || '?'; }
  }

  function addTile(id, label, stream, muted) {
    removeTile(id);
    const tile = document.createElement('div');
    tile.className = 'tile';
    tile.dataset.id = id;
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    video.muted = muted;
    video.srcObject = stream;
    const span = document.createElement('span');
    span.textContent = label;
    tile.append(video, span);
    $('tiles').append(tile);
  }

  function removeTile(id) {
    const old = document.querySelector(`.tile[data-id="${CSS.escape(id)}"]`);
    if (old) old.remove();
  }

  function candidateSender(endpointName) {
    return (e) => {
      if (!e.candidate || !state.rpc) return;
      state.rpc.call('onIceCandidate', {
        endpointName, candidate: e.candidate.candidate,
        sdpMid: e.candidate.sdpMid, sdpMLineIndex: e.candidate.sdpMLineIndex,
      }).catch(() => {});
    };
  }

  async function publish(user) {
    let media;
    try {
      media = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 480 } });
    } catch (e) {
      setStatus(`joined without camera (${e.name}): watching only`);
      return;
    }
    state.local = media;
    addTile('local', `${user} (you)`, media, true);
    const pc = new RTCPeerConnection({ iceServers: state.iceServers });
    for (const track of media.getTracks()) pc.addTransceiver(track, { direction: 'sendonly', streams: [media] });
    pc.onicecandidate = candidateSender(state.me);
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const v = media.getVideoTracks()[0];
    const settings = v ? v.getSettings() : {};
    const r = await state.rpc.call('publishVideo', {
      sdpOffer: offer.sdp, doLoopback: false,
      hasAudio: media.getAudioTracks().length > 0, hasVideo: !!v,
      audioActive: true, videoActive: true, typeOfVideo: 'CAMERA',
      frameRate: settings.frameRate || 30,
      videoDimensions: JSON.stringify({ width: settings.width || 640, height: settings.height || 480 }),
    });
    await pc.setRemoteDescription({ type: 'answer', sdp: r.sdpAnswer });
    state.pub = { pc, streamId: r.id };
  }

  async function subscribe(connectionId, streamId) {
    if (state.subs[connectionId]) return;
    const pc = new RTCPeerConnection({ iceServers: state.iceServers });
    state.subs[connectionId] = { pc, streamId };
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
    const remote = new MediaStream();
    pc.ontrack = (e) => remote.addTrack(e.track);
    pc.onicecandidate = candidateSender(connectionId);
    addTile(connectionId, state.names[connectionId] || connectionId, remote, false);
    try {
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      const r = await state.rpc.call('receiveVideoFrom', { sender: streamId, sdpOffer: offer.sdp });
      await pc.setRemoteDescription({ type: 'answer', sdp: r.sdpAnswer });
    } catch (e) {
      setStatus(`cannot receive ${state.names[connectionId] || connectionId}: ${e.message}`);
      dropSubscriber(connectionId);
    }
  }

  function dropSubscriber(connectionId) {
    const s = state.subs[connectionId];
    if (s) s.pc.close();
    delete state.subs[connectionId];
    removeTile(connectionId);
  }

  function onNotification(method, p) {
    switch (method) {
      case 'participantJoined':
        state.names[p.id] = nameOf(p.metadata);
        break;
      case 'participantPublished':
        if (p.streams && p.streams[0]) subscribe(p.id, p.streams[0].id);
        break;
      case 'participantUnpublished':
      case 'participantLeft':
        if (p.connectionId === state.me) break;
        dropSubscriber(p.connectionId);
        break;
      case 'participantEvicted':
        if (p.connectionId === state.me) { setStatus(`removed from the session (${p.reason})`); leave(false); }
        else dropSubscriber(p.connectionId);
        break;
      default:
        break; // iceCandidate: ringsfu puts its candidates in the SDP
    }
  }

  async function join() {
    const session = $('session').value.trim();
    const user = $('user').value.trim() || `guest-${Math.floor(Math.random() * 1000)}`;
    $('join').disabled = true;
    try {
      setStatus('getting a token…');
      const r = await fetch('/demo/token', {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ session, user }),
      });
      const t = await r.json();
      if (!r.ok) throw new Error(t.message || `HTTP ${r.status}`);
      const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
      state.rpc = new Rpc(`${scheme}://${location.host}/openvidu?sessionId=${encodeURIComponent(session)}`,
        onNotification, () => { if (state.me) { setStatus('disconnected'); leave(false); } });
      await state.rpc.opened;
      state.rpc.startPings();
      const res = await state.rpc.call('joinRoom', {
        token: t.token, session, platform: navigator.userAgent.slice(0, 120), sdkVersion: '2.32.2',
        metadata: JSON.stringify({ clientData: user }), secret: '', recorder: false, stt: false,
      });
      state.me = res.id;
      state.iceServers = (res.customIceServers || []).map((s) => ({ urls: [s.url], username: s.username, credential: s.credential }));
      $('leave').disabled = false;
      setStatus(`in "${session}" as ${user}`);
      for (const p of res.value || []) {
        state.names[p.id] = nameOf(p.metadata);
        for (const s of p.streams || []) subscribe(p.id, s.id);
      }
      await publish(user);
    } catch (e) {
      setStatus(`could not join: ${e.message}`);
      leave(false);
    }
  }

  function leave(tell = true) {
    const rpc = state.rpc;
    state.rpc = null;
    state.me = null;
    if (rpc && tell) rpc.call('leaveRoom').catch(() => {}).finally(() => rpc.close());
    else if (rpc) rpc.close();
    for (const id of Object.keys(state.subs)) dropSubscriber(id);
    if (state.pub) state.pub.pc.close();
    state.pub = null;
    if (state.local) state.local.getTracks().forEach((t) => t.stop());
    state.local = null;
    $('tiles').replaceChildren();
    $('join').disabled = false;
    $('leave').disabled = true;
  }

  $('join').onclick = join;
  $('leave').onclick = () => { leave(true); setStatus('left'); };
  window.addEventListener('beforeunload', () => leave(true));
})();

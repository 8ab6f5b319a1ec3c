// A minimal OpenVidu JSON-RPC participant over a real WebSocket (the `ws` package), speaking the
// framing openvidu-browser uses: ping first, then joinRoom; integer ids from 0.
import WebSocket from 'ws';

export class Participant {
  constructor(token) {
    this.token = token;
    const u = new URL(token);
    this.sessionId = u.searchParams.get('sessionId');
    this.wsUrl = `${u.protocol}//${u.host}/openvidu?sessionId=${this.sessionId}`;
    this.nextId = 0;
    this.pending = new Map();
    this.notifications = [];
    this.closed = null;
  }

  async open() {
    this.ws = new WebSocket(this.wsUrl);
    this.ws.on('message', (data) => {
      const msg = JSON.parse(data.toString());
      if (msg.id !== undefined && msg.id !== null && this.pending.has(msg.id)) {
        const { resolve } = this.pending.get(msg.id);
        this.pending.delete(msg.id);
        resolve(msg);
      } else if (msg.method) {
        this.notifications.push(msg);
      }
    });
    this.ws.on('close', (code, reason) => { this.closed = { code, reason: reason.toString() }; });
    await new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
    });
    const pong = await this.call('ping', { interval: 5000 });
    if (pong.result?.value !== 'pong') throw new Error(`bad pong ${JSON.stringify(pong)}`);
    return this;
  }

  /** Sends a request and resolves with the whole response message (result or error). */
  call(method, params) {
    const id = this.nextId++;
    const msg = { jsonrpc: '2.0', method, id };
    if (params !== undefined) msg.params = params;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${method} timed out`));
      }, 10000);
      this.pending.set(id, { resolve: (m) => { clearTimeout(timer); resolve(m); } });
      this.ws.send(JSON.stringify(msg));
    });
  }

  async join(clientData = '') {
    const r = await this.call('joinRoom', {
      token: this.token, session: this.sessionId, platform: 'node test', sdkVersion: '2.32.2',
      metadata: clientData, secret: '', recorder: false, stt: false,
    });
    if (r.error) throw new Error(`joinRoom failed: ${JSON.stringify(r.error)}`);
    this.joined = r.result;
    return r.result;
  }

  seen(method, pred = () => true) {
    return this.notifications.find((n) => n.method === method && pred(n.params));
  }

  close() { this.ws?.close(4102, 'Connection closed by client'); }
}

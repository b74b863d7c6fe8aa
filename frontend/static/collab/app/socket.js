// The case-room socket: /ws/cases/<id>/?device=<id>&proof=1. The server's first
// frame is a `challenge`; it is answered with `prove` (the device's DSK signature
// over the challenge, case and device, cr1 signWsProof) before `hello` comes.
// Reconnects with backoff after a dropped connection; the owner resumes from its
// last seq on `hello` (and on a resync hello whose last_seq is beyond what it holds).
// Close codes: 4401 session ended (sign-out, inactivity) -> sign-in page;
// 4403 this device was removed or revoked, 4404 no case, 4400 bad request ->
// stop; 4503 (the server cannot check the session now) and 4507 (this connection
// fell too far behind) -> reconnect with backoff and resume, like a dropped
// connection; anything else -> reconnect.

import { b64d, b64e, signWsProof } from '../cr1/index.js';
import { noteServerActivity, sessionEnded } from './session.js';

const FINAL = new Set([4400, 4403, 4404]);
// Closes after which reconnecting at once would only meet the same condition.
const BACK_OFF = new Set([4503, 4507]);
const MIN_WAIT_MS = 500;
const MAX_WAIT_MS = 15_000;
// What the server counts as a person's activity for automatic logoff (docs/protocol.md):
// sending, typing, acknowledging an urgent message. Read receipts are sent by the page
// on its own, so they never keep a session alive.
const ACTIVITY = new Set(['send', 'typing', 'ack_urgent']);
const ANSWERS = new Set(['error', 'ack', 'messages', 'pong', 'urgent_ack']);

export class RoomSocket {
  /** `device`: this browser's device record ({deviceId, signer}). */
  constructor(caseId, device, { onFrame, onState, onFinal }) {
    this.caseId = caseId;
    this.device = device;
    this.url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws/cases/${caseId}/?device=${device.deviceId}&proof=1`;
    this.onFrame = onFrame;
    this.onState = onState ?? (() => {});
    this.onFinal = onFinal ?? (() => {});
    this.ws = null;
    this.pending = new Map(); // ref -> {resolve, reject, timer}
    this.refs = 0;
    this.backoff = MIN_WAIT_MS;
    this.troubled = false; // the last close was 4503/4507
    this.stopped = false;
    this.state = 'connecting';
  }

  connect() {
    if (this.stopped) return;
    this.setState('connecting');
    const ws = new WebSocket(this.url);
    this.ws = ws;
    let first = true;
    this.ready = false; // open for frames once proven (the first frame after the challenge)
    ws.onmessage = (ev) => {
      let frame;
      try { frame = JSON.parse(ev.data); } catch { return; }
      if (first) {
        first = false;
        if (frame?.type === 'challenge') {
          this.prove(ws, frame);
          return;
        }
      }
      if (!this.ready) {
        this.ready = true;
        if (!this.troubled) this.backoff = MIN_WAIT_MS; // proven and answered: healthy again
        this.troubled = false;
        this.setState('open');
      }
      if (frame && typeof frame.ref === 'string' && this.pending.has(frame.ref)
          && ANSWERS.has(frame.type)) {
        const p = this.pending.get(frame.ref);
        this.pending.delete(frame.ref);
        clearTimeout(p.timer);
        p.resolve(frame);
        return;
      }
      this.onFrame(frame);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject(Object.assign(new Error('connection lost'), { name: 'ConnectionLost' }));
      }
      this.pending.clear();
      if (ev.code === 4401) {
        this.stopped = true;
        this.setState('closed');
        sessionEnded('idle');
        return;
      }
      if (FINAL.has(ev.code)) {
        this.stopped = true;
        this.setState('closed');
        this.onFinal(ev.code);
        return;
      }
      if (this.stopped) return;
      // After 4503/4507 the next successful hello does not reset the backoff: a server
      // that keeps failing right after hello is not retried every half second.
      if (BACK_OFF.has(ev.code)) this.troubled = true;
      this.setState('reconnecting');
      const wait = this.nextWait();
      setTimeout(() => this.connect(), wait);
    };
  }

  /** The wait before the next attempt (exponential, capped, with jitter so the
   * sockets a server dropped at once do not all come back at once). */
  nextWait() {
    const base = this.backoff;
    this.backoff = Math.min(this.backoff * 2, MAX_WAIT_MS);
    return Math.round(base / 2 + Math.random() * (base / 2));
  }

  /** Answer the server's challenge: nothing else is sent before hello. The DSK signs
   * inside WebCrypto (or tweetnacl for a legacy key), asynchronously. */
  async prove(ws, frame) {
    let sig;
    try {
      sig = await signWsProof(this.device.signer, b64d(String(frame.nonce ?? ''), 32), this.caseId, this.device.deviceId);
    } catch {
      ws.close(1000); // a malformed challenge: reconnect for a new one
      return;
    }
    if (this.ws !== ws || ws.readyState !== WebSocket.OPEN) return; // closed meanwhile
    ws.send(JSON.stringify({ type: 'prove', sig: b64e(sig) }));
  }

  setState(state) {
    this.state = state;
    this.onState(state);
  }

  get open() {
    return this.ws !== null && this.ready && this.ws.readyState === WebSocket.OPEN;
  }

  /** Fire and forget (typing, read). Returns false when not connected. */
  post(frame) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(frame));
    if (ACTIVITY.has(frame.type) && !(frame.type === 'typing' && !frame.active)) noteServerActivity(Date.now() - 30_000);
    return true;
  }

  /** Send a frame with a fresh ref and wait for its answer (ack, messages, error). */
  request(frame, timeoutMs = 20_000) {
    if (!this.open) {
      return Promise.reject(Object.assign(new Error('not connected'), { name: 'ConnectionLost' }));
    }
    const ref = `r${++this.refs}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(ref);
        reject(Object.assign(new Error('no answer from the server'), { name: 'ConnectionLost' }));
      }, timeoutMs);
      this.pending.set(ref, { resolve, reject, timer });
      this.post({ ...frame, ref });
    });
  }

  close() {
    this.stopped = true;
    if (this.ws) this.ws.close(1000);
  }
}

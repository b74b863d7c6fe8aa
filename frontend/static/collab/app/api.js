// fetch() wrapper for the JSON API: CSRF token, device header and proof, stable
// error codes. A 401 means the session ended (sign-out or inactivity), except a
// refused device proof (its answer carries a fresh `nonce`: retried once).
//
// Device proof (docs/protocol-crypto.md §9c): every call that acts as a device
// (`device` option) carries `X-Collab-Device` and
//   X-Collab-Proof: <time_ms>.<nonce>.<jti b64url>.<sig b64url>
// signed with that device's DSK over the method, the path with its query exactly as
// sent, the exact body bytes, the server's nonce and a fresh 16-byte jti. The nonce
// comes from GET /api/device-nonce, then from each answer's X-Collab-Nonce header.

import { asSigner, randomBytes, signHttpProof } from '../cr1/index.js';
import { sessionEnded, noteServerActivity } from './session.js';

const csrfToken = () => globalThis.document?.querySelector('meta[name="csrf-token"]')?.content ?? '';

export class ApiError extends Error {
  constructor(status, body) {
    const code = body?.error ?? `http_${status}`;
    super(body?.detail ? `${code}: ${body.detail}` : code);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.detail = body?.detail ?? '';
    this.body = body ?? {};
  }
}

// --- device proofs --------------------------------------------------------------

const NONCE_FRESH_MS = 240_000; // the server accepts a nonce for 300 s
const signers = new Map(); // device id -> DSK signer (cr1 signer.js) of a device this page holds
let current = null; // {nonce, gotAt (local ms), skew (server ms - local ms)}

/** Let api() prove requests for this device (its record from keystore.js, whose
 * `signer` is a WebCrypto key or, for a legacy record, a tweetnacl seed). */
export function useDevice(device) {
  if (device?.deviceId && device.signer) signers.set(device.deviceId, asSigner(device.signer));
}

export function forgetSigners() {
  signers.clear();
  current = null;
}

export function base64url(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function fromBase64url(text) {
  const s = atob(text.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (text.length % 4)) % 4));
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

/** Take a nonce from the server; its first 8 bytes are the server's issue time, which
 * gives this browser's clock offset (a proof's time must be within 120 s of the server's). */
export function noteNonce(nonce, now = Date.now()) {
  if (typeof nonce !== 'string' || !nonce) return;
  let skew = current?.skew ?? 0;
  try {
    const raw = fromBase64url(nonce);
    if (raw.length >= 8) {
      const issued = Number(new DataView(raw.buffer, raw.byteOffset, 8).getBigUint64(0));
      if (Number.isSafeInteger(issued)) skew = issued - now;
    }
  } catch { /* opaque nonce: keep the old offset */ }
  current = { nonce, gotAt: now, skew };
}

export function nonceState() {
  return current;
}

/** The header value (pure; tests call it with fixed jti and time). */
export async function proofHeader(signer, { deviceId, method, path, body, nonce, timeMs, jti }) {
  const sig = await signHttpProof(signer, { deviceId, timeMs, method, path, body, nonce, jti });
  return `${timeMs}.${nonce}.${base64url(jti)}.${base64url(sig)}`;
}

async function freshNonce() {
  if (current && Date.now() - current.gotAt < NONCE_FRESH_MS) return current.nonce;
  const res = await fetch('/api/device-nonce', {
    method: 'GET', headers: { Accept: 'application/json' }, credentials: 'same-origin', cache: 'no-store', redirect: 'error',
  });
  if (res.status === 401) {
    let data = {};
    try { data = await res.json(); } catch { /* not JSON */ }
    sessionEnded(data.error === 'session_expired' ? 'idle' : 'signed_out');
    throw new ApiError(401, data);
  }
  if (!res.ok) throw new ApiError(res.status, {});
  noteNonce((await res.json()).nonce);
  return current.nonce;
}

/** The path with query exactly as the server sees it (Django get_full_path). */
function fullPath(path) {
  const base = globalThis.location?.origin ?? 'http://localhost';
  const u = new URL(path, base);
  return u.pathname + u.search;
}

// --- requests --------------------------------------------------------------------

/**
 * api('POST', '/api/cases', {json: {...}, device: id})
 * Options: json (object body), bytes (Uint8Array body), device (X-Collab-Device, with
 * X-Collab-Proof when useDevice() gave its keys), headers (extra), raw (return the
 * Response, for binary downloads), background (a request the page makes by itself, not
 * a person's action: sent with X-Collab-Background: 1, so it does not postpone
 * automatic logoff).
 */
export async function api(method, path, options = {}) {
  if (ending) throw new ApiError(401, { error: 'signing_out', detail: 'Signing out.' });
  const pending = request(method, path, options);
  inFlight.add(pending);
  try {
    return await pending;
  } finally {
    inFlight.delete(pending);
  }
}

const inFlight = new Set();
let ending = false;
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Before signing out: start no new request and let those in flight finish (at most
 * `ms`), so none is answered 401 by a session that has just ended.
 */
export async function quiesce(ms = 3000) {
  ending = true;
  let timer;
  await Promise.race([
    Promise.allSettled([...inFlight]),
    new Promise((resolve) => { timer = setTimeout(resolve, ms); }),
  ]);
  clearTimeout(timer);
}

async function request(method, path, { json, bytes, device, headers = {}, raw = false, background = false } = {}) {
  const h = { Accept: 'application/json', ...headers };
  if (background) h['X-Collab-Background'] = '1';
  // What the server counts as activity (docs/protocol.md): a changing API call that is
  // not marked background. Reads (GET, HEAD) never postpone automatic logoff.
  const activity = !background && !SAFE_METHODS.has(method.toUpperCase());
  if (method !== 'GET' && method !== 'HEAD') h['X-CSRFToken'] = csrfToken();
  let body;
  if (json !== undefined) {
    h['Content-Type'] = 'application/json';
    body = new TextEncoder().encode(JSON.stringify(json));
  } else if (bytes !== undefined) {
    h['Content-Type'] = 'application/octet-stream';
    body = bytes;
  }
  const signer = device ? signers.get(device) : null;
  if (device) h['X-Collab-Device'] = device;
  for (let attempt = 0; ; attempt++) {
    if (signer) {
      const nonce = await freshNonce();
      h['X-Collab-Proof'] = await proofHeader(signer, {
        deviceId: device, method: method.toUpperCase(), path: fullPath(path), body: body ?? new Uint8Array(0),
        nonce, timeMs: Date.now() + (current?.skew ?? 0), jti: randomBytes(16),
      });
    }
    const res = await fetch(path, {
      method, headers: { ...h }, body, credentials: 'same-origin', cache: 'no-store', redirect: 'error',
    });
    if (activity) noteServerActivity();
    const next = res.headers?.get?.('X-Collab-Nonce');
    if (next) noteNonce(next);
    if (res.status === 401) {
      let data = {};
      try { data = await res.json(); } catch { /* not JSON */ }
      if (typeof data.nonce === 'string' && data.nonce) {
        // A refused device proof (stale nonce, clock, replay): once more with the new nonce.
        noteNonce(data.nonce);
        if (signer && attempt === 0) continue;
        throw new ApiError(401, data);
      }
      sessionEnded(data.error === 'session_expired' ? 'idle' : 'signed_out');
      throw new ApiError(401, data);
    }
    if (!res.ok) {
      let data = {};
      try { data = await res.json(); } catch { /* not JSON */ }
      throw new ApiError(res.status, data);
    }
    return raw ? res : res.json();
  }
}

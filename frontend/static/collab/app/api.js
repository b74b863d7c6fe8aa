// fetch() wrapper for the JSON API: CSRF token, device header, stable error
// codes. A 401 means the session ended (sign-out or inactivity).

import { sessionEnded, noteServerActivity } from './session.js';

const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.content ?? '';

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

/**
 * api('POST', '/api/cases', {json: {...}, device: id})
 * Options: json (object body), bytes (Uint8Array body), device (X-Collab-Device),
 * headers (extra), raw (return the Response, for binary downloads).
 */
export async function api(method, path, { json, bytes, device, headers = {}, raw = false } = {}) {
  const h = { Accept: 'application/json', ...headers };
  if (method !== 'GET' && method !== 'HEAD') h['X-CSRFToken'] = csrfToken();
  if (device) h['X-Collab-Device'] = device;
  let body;
  if (json !== undefined) {
    h['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (bytes !== undefined) {
    h['Content-Type'] = 'application/octet-stream';
    body = bytes;
  }
  const res = await fetch(path, {
    method, headers: h, body, credentials: 'same-origin', cache: 'no-store', redirect: 'error',
  });
  noteServerActivity();
  if (res.status === 401) {
    let data = {};
    try { data = await res.json(); } catch { /* not JSON */ }
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

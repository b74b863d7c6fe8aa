// The HTTP device proof the browser sends (app/api.js): header layout, what is signed
// (method, full path with query, exact body bytes, nonce, jti), the nonce from
// /api/device-nonce and then X-Collab-Nonce, and one retry on a 401 carrying a nonce.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import * as cr1 from '../static/collab/cr1/index.js';
import { api, base64url, forgetSigners, noteNonce, nonceState, proofHeader, useDevice } from '../static/collab/app/api.js';
import { seed } from './helpers.mjs';

const DEVICE = '00000000-0000-4000-8000-00000000d001';
const dsk = seed('api-proof device');
// As in a browser: a fresh non-extractable WebCrypto key (Node 20 has Ed25519).
const { signer: webSigner } = await cr1.generateDeviceSigner({ webCrypto: true });

function b64urlDecode(text) {
  return Uint8Array.from(Buffer.from(text, 'base64url'));
}

/** A server nonce as collab/accounts/proofs.py makes them: u64 issued_ms || 16 bytes. */
function serverNonce(issuedMs, fill = 7) {
  const raw = new Uint8Array(24).fill(fill);
  new DataView(raw.buffer).setBigUint64(0, BigInt(issuedMs));
  return base64url(raw);
}

function parse(header) {
  const [time, nonce, jti, sig] = header.split('.');
  return { timeMs: Number(time), nonce, jti: b64urlDecode(jti), sig: b64urlDecode(sig) };
}

function verify(header, method, path, body, dskPub = webSigner.publicKey) {
  const p = parse(header);
  assert.equal(p.jti.length, 16);
  assert.equal(p.sig.length, 64);
  cr1.verifyHttpProof(dskPub, p.sig, {
    deviceId: DEVICE, timeMs: p.timeMs, method, path, body, nonce: p.nonce, jti: p.jti,
  });
  return p;
}

function fakeFetch(script) {
  const calls = [];
  globalThis.fetch = async (url, init) => {
    calls.push({ url, init });
    const answer = script(url, init, calls.length);
    return {
      status: answer.status ?? 200,
      ok: (answer.status ?? 200) < 300,
      headers: new Map(Object.entries(answer.headers ?? {})),
      json: async () => answer.json ?? {},
    };
  };
  return calls;
}

test('proofHeader is <time_ms>.<nonce>.<jti>.<sig> over the exact request (legacy seed signer)', async () => {
  const jti = new Uint8Array(16).fill(3);
  const body = new TextEncoder().encode('{"a":1}');
  const nonce = serverNonce(1_700_000_000_000);
  const pub = cr1.ed25519Public(dsk);
  const header = await proofHeader(cr1.seedSigner(dsk), { deviceId: DEVICE, method: 'POST', path: '/api/x?y=1', body, nonce, timeMs: 1_700_000_000_123, jti });
  assert.match(header, /^1700000000123\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{86}$/);
  const p = verify(header, 'POST', '/api/x?y=1', body, pub);
  assert.equal(p.nonce, nonce);
  assert.throws(() => verify(header, 'POST', '/api/x?y=2', body, pub));
  assert.throws(() => verify(header, 'POST', '/api/x?y=1', new TextEncoder().encode('{"a":2}'), pub));
  assert.throws(() => verify(header, 'PUT', '/api/x?y=1', body, pub));
  // Another key's proof does not verify under this device's key.
  assert.throws(() => verify(header, 'POST', '/api/x?y=1', body));
});

test('api() fetches a nonce, signs the body bytes it sends (WebCrypto key), then uses X-Collab-Nonce', async () => {
  forgetSigners();
  useDevice({ deviceId: DEVICE, signer: webSigner });
  const first = serverNonce(Date.now() + 30_000, 1); // server clock 30 s ahead
  const second = serverNonce(Date.now() + 30_000, 2);
  const calls = fakeFetch((url) => (url === '/api/device-nonce'
    ? { json: { nonce: first } }
    : { json: { ok: true }, headers: { 'X-Collab-Nonce': second } }));
  await api('POST', '/api/cases/c/log?after=3', { json: { entry: 'x' }, device: DEVICE });
  assert.equal(calls[0].url, '/api/device-nonce');
  const sent = calls[1].init;
  assert.equal(sent.headers['X-Collab-Device'], DEVICE);
  const p = verify(sent.headers['X-Collab-Proof'], 'POST', '/api/cases/c/log?after=3', sent.body);
  assert.equal(new TextDecoder().decode(sent.body), '{"entry":"x"}');
  assert.equal(p.nonce, first);
  assert.ok(Math.abs(p.timeMs - (Date.now() + 30_000)) < 5_000, 'time follows the server clock');
  assert.equal(nonceState().nonce, second);
  // Next call: no nonce fetch, the header's nonce; a GET signs an empty body.
  await api('GET', '/api/key-backup?case=c&after=-1', { device: DEVICE });
  assert.equal(calls.length, 3);
  const q = verify(calls[2].init.headers['X-Collab-Proof'], 'GET', '/api/key-backup?case=c&after=-1', new Uint8Array(0));
  assert.equal(q.nonce, second);
});

test('a 401 with a nonce is retried once with a fresh proof; a second one is an error', async () => {
  forgetSigners();
  useDevice({ deviceId: DEVICE, signer: webSigner });
  noteNonce(serverNonce(Date.now()));
  const fresh = serverNonce(Date.now(), 9);
  let n = 0;
  const calls = fakeFetch(() => (++n === 1
    ? { status: 401, json: { error: 'bad_device_proof', nonce: fresh } }
    : { json: { ok: 1 } }));
  assert.deepEqual(await api('PUT', '/api/blobs/b/parts/0', { bytes: new Uint8Array([1, 2]), device: DEVICE }), { ok: 1 });
  assert.equal(calls.length, 2);
  const a = parse(calls[0].init.headers['X-Collab-Proof']);
  const b = verify(calls[1].init.headers['X-Collab-Proof'], 'PUT', '/api/blobs/b/parts/0', new Uint8Array([1, 2]));
  assert.equal(b.nonce, fresh);
  assert.notDeepEqual(a.jti, b.jti);

  fakeFetch(() => ({ status: 401, json: { error: 'replayed_device_proof', nonce: fresh } }));
  await assert.rejects(api('GET', '/api/x', { device: DEVICE }), (err) => err.code === 'replayed_device_proof');
});

test('no device: no proof header', async () => {
  const calls = fakeFetch(() => ({ json: {} }));
  await api('GET', '/api/cases');
  assert.equal(calls[0].init.headers['X-Collab-Proof'], undefined);
  assert.equal(calls[0].init.headers['X-Collab-Device'], undefined);
});

test('a background request is marked X-Collab-Background: 1; a person\'s is not', async () => {
  const calls = fakeFetch(() => ({ json: {} }));
  await api('PUT', '/api/key-backup', { json: { items: [] }, background: true });
  await api('POST', '/api/cases/c/status', { json: { status: 'accepted' } });
  assert.equal(calls[0].init.headers['X-Collab-Background'], '1');
  assert.equal(calls[1].init.headers['X-Collab-Background'], undefined);
});

// loadDevice (app/keystore.js) refuses a stored DSK CryptoKey that is not the key of
// the certificate's dsk_pub (a key swapped into the IndexedDB record), and loads the
// right one. IndexedDB is an in-memory stand-in; the keys are real WebCrypto keys.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import * as cr1 from '../static/collab/cr1/index.js';
import { ALICE, NOT_BEFORE_MS } from './helpers.mjs';

/** Just what keystore.js uses of IndexedDB: one object store, get/put/delete. */
function memoryIndexedDB() {
  const data = new Map();
  const later = (fn) => setTimeout(fn, 0);
  const db = {
    createObjectStore() {},
    transaction() {
      const t = {};
      const op = (fn) => {
        const req = {};
        later(() => {
          req.result = fn();
          req.onsuccess?.();
          later(() => t.oncomplete?.());
        });
        return req;
      };
      const store = {
        get: (k) => op(() => data.get(k)),
        put: (v, k) => op(() => { data.set(k, v); return k; }),
        delete: (k) => op(() => { data.delete(k); }),
      };
      t.objectStore = () => store;
      return t;
    },
  };
  return {
    data,
    open() {
      const req = { result: db };
      later(() => { req.onupgradeneeded?.(); req.onsuccess?.(); });
      return req;
    },
  };
}

const idb = memoryIndexedDB();
globalThis.indexedDB = idb;
const { dskMatches, loadDevice, saveDevice } = await import('../static/collab/app/keystore.js');

async function nonExtractable() {
  const pair = await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
  const pub = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
  return { key: pair.privateKey, pub };
}

test('a stored DSK that is not the certificate\'s key is refused; the right one loads and signs', async () => {
  const dsk = await nonExtractable();
  const deviceId = 'd0000000-0000-4000-8000-0000000000aa';
  const dxkSecret = new Uint8Array(32).fill(3);
  const cert = cr1.makeDeviceCert(ALICE.uikSeed, ALICE.userId, deviceId, dsk.pub,
    cr1.x25519Public(dxkSecret), NOT_BEFORE_MS);
  await saveDevice({ userId: ALICE.userId, deviceId, dskKey: dsk.key, dxkSecret, uikSeed: ALICE.uikSeed, cert: cert.toWire(), name: 'ward pc' });

  const loaded = await loadDevice(ALICE.userId);
  assert.ok(loaded);
  assert.deepEqual(loaded.signer.publicKey, dsk.pub);
  const sig = await loaded.signer.sign(new Uint8Array([1, 2, 3]));
  assert.equal(sig.length, 64);

  // The attacker: another non-extractable key put in the record's place.
  const other = await nonExtractable();
  const record = idb.data.get(`device:${ALICE.userId}`);
  idb.data.set(`device:${ALICE.userId}`, { ...record, dsk: other.key });
  assert.equal(await loadDevice(ALICE.userId), null);
  assert.equal(await dskMatches(other.key, dsk.pub), false);
  assert.equal(await dskMatches(dsk.key, dsk.pub), true);
});

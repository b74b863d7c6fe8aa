// Shared test helpers: the CR1 vector file and deterministic identities
// built exactly like collab/crypto/vectors/fixtures.py (public seeds: tests only).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import * as cr1 from '../static/collab/cr1/index.js';

export const V = JSON.parse(
  readFileSync(new URL('../../collab/crypto/vectors/cr1.json', import.meta.url), 'utf8'),
);

export const b = (hex) => cr1.fromHex(hex);
export const hx = (bytes) => cr1.toHex(bytes);
export const utf8 = (s) => new TextEncoder().encode(s);

/** assert.throws for a CryptoError with exactly this code. */
export function throwsCode(fn, code, message) {
  assert.throws(fn, (err) => {
    assert.ok(err instanceof cr1.CryptoError, `expected CryptoError, got ${err}`);
    assert.equal(err.code, code, message ?? err.message);
    return true;
  });
}

/** throwsCode for an async function (or one that throws before its first await). */
export async function throwsAsync(fn, code, message) {
  await assert.rejects(async () => fn(), (err) => {
    assert.ok(err instanceof cr1.CryptoError, `expected CryptoError, got ${err}`);
    assert.equal(err.code, code, message ?? err.message);
    return true;
  });
}

export async function rejectsCode(promise, code) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof cr1.CryptoError, `expected CryptoError, got ${err}`);
    assert.equal(err.code, code, err.message);
    return true;
  });
}

export function seed(label) {
  return cr1.sha512(utf8(`CR1 test vector seed\0${label}`)).slice(0, 32);
}

export function fixedUuid(n) {
  return `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;
}

export const NOT_BEFORE_MS = 1_700_000_000_000;

export function person(name, number, nDevices = 1) {
  const uikSeed = seed(`${name}/uik`);
  const userId = fixedUuid(number);
  const devices = [];
  for (let i = 0; i < nDevices; i++) {
    const deviceId = fixedUuid(number * 0x100 + i + 1);
    const dskSeed = seed(`${name}/d${i}/dsk`);
    const dxkSecret = seed(`${name}/d${i}/dxk`);
    const cert = cr1.makeDeviceCert(
      uikSeed, userId, deviceId, cr1.ed25519Public(dskSeed), cr1.x25519Public(dxkSecret), NOT_BEFORE_MS,
    );
    devices.push({ deviceId, dskSeed, dxkSecret, cert, dskPub: cert.dskPub, dxkPub: cert.dxkPub });
  }
  return { name, userId, uikSeed, uikPub: cr1.ed25519Public(uikSeed), devices, d: devices[0] };
}

export const CASE_ID = 'c0000000-0000-4000-8000-000000000001';
export const ALICE = person('alice', 1, 2); // owner, two devices
export const BOB = person('bob', 2); // member
export const CAROL = person('carol', 3); // patient
export const DAVE = person('dave', 4); // admin
export const T0 = 1_700_000_000_000;

/** buildEntry authored by a person's first device (or `device`); the seed is taken
 * as a tweetnacl signer (cr1 asSigner). */
export function author(p, device = p.d) {
  return { signer: device.dskSeed, authorUserId: p.userId, authorDeviceId: device.deviceId };
}

/** The same DSK seed as a WebCrypto Ed25519 key (non-extractable, imported from
 * PKCS#8), to run the shared vectors through the WebCrypto signer too. */
const PKCS8_ED25519 = cr1.fromHex('302e020100300506032b657004220420');

export async function webCryptoSignerFromSeed(dskSeed) {
  const key = await crypto.subtle.importKey('pkcs8', cr1.concat(PKCS8_ED25519, dskSeed), { name: 'Ed25519' }, false, ['sign']);
  return cr1.webCryptoSigner(key, cr1.ed25519Public(dskSeed));
}

/** Both signers over one seed: [['tweetnacl', signer], ['webcrypto', signer]]. */
export async function bothSigners(dskSeed) {
  return [['tweetnacl', cr1.seedSigner(dskSeed)], ['webcrypto', await webCryptoSignerFromSeed(dskSeed)]];
}

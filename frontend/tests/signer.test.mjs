// The device signing key as a WebCrypto key (cr1/signer.js, app/identity.js): a new
// DSK is a non-extractable Ed25519 CryptoKey whose bytes cannot be exported; the
// tweetnacl signer remains for seeds (no WebCrypto Ed25519, legacy records); both
// sign identically; a signer that is not the certified key is caught by verifiers.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import * as cr1 from '../static/collab/cr1/index.js';
import { newDevice } from '../static/collab/app/identity.js';
import { ALICE, BOB, CASE_ID, T0, V, author, b, bothSigners, hx, throwsAsync } from './helpers.mjs';

test('WebCrypto Ed25519 is detected (Node 20 has it)', async () => {
  assert.equal(await cr1.webCryptoEd25519(), true);
  assert.equal(cr1.webCryptoEd25519(), cr1.webCryptoEd25519(), 'probed once');
});

test('a new DSK is a non-extractable CryptoKey: no format exports it', async () => {
  const { signer, privateKey, seed } = await cr1.generateDeviceSigner();
  assert.equal(signer.kind, 'webcrypto');
  assert.equal(seed, null);
  assert.ok(privateKey instanceof CryptoKey);
  assert.equal(privateKey.extractable, false);
  assert.equal(privateKey.type, 'private');
  assert.deepEqual(privateKey.usages, ['sign']);
  assert.equal(signer.key, privateKey);
  for (const format of ['pkcs8', 'jwk', 'raw']) {
    await assert.rejects(crypto.subtle.exportKey(format, privateKey), `exportKey(${format}) must fail`);
  }
  // It cannot be wrapped out either (wrapKey needs an extractable key).
  const kek = await crypto.subtle.generateKey({ name: 'AES-KW', length: 256 }, false, ['wrapKey']);
  await assert.rejects(crypto.subtle.wrapKey('pkcs8', privateKey, kek, 'AES-KW'));
  const msg = new TextEncoder().encode('signed inside WebCrypto');
  const sig = await signer.sign(msg);
  cr1.verify(signer.publicKey, msg, sig); // the strict (libsodium-equivalent) check
});

test('without WebCrypto Ed25519 the DSK is a tweetnacl seed', async () => {
  const { signer, privateKey, seed } = await cr1.generateDeviceSigner({ webCrypto: false });
  assert.equal(signer.kind, 'tweetnacl');
  assert.equal(privateKey, null);
  assert.equal(seed.length, 32);
  assert.deepEqual(signer.publicKey, cr1.ed25519Public(seed));
});

test('both signers give the Ed25519 vector signature byte for byte', async () => {
  const ed = V.primitives.ed25519;
  for (const [kind, signer] of await bothSigners(b(ed.seed))) {
    assert.equal(hx(signer.publicKey), ed.public, kind);
    assert.equal(hx(await signer.sign(b(ed.message))), ed.signature, kind);
  }
});

test('signers are checked: junk is refused, a short signature is refused', async () => {
  assert.throws(() => cr1.asSigner({}), (err) => err.code === 'bad_key');
  assert.throws(() => cr1.asSigner(null), (err) => err.code === 'bad_key');
  const liar = { publicKey: ALICE.d.dskPub, sign: async () => new Uint8Array(63) };
  await throwsAsync(() => cr1.signWith(liar, new Uint8Array(1)), 'bad_length');
  const { publicKey } = await crypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']);
  assert.throws(() => cr1.webCryptoSigner(publicKey, ALICE.d.dskPub), (err) => err.code === 'bad_key');
  const pair = await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign']);
  assert.throws(() => cr1.webCryptoSigner(pair.privateKey, new Uint8Array(31)), (err) => err.code === 'bad_length');
  // A caller that still passes the old seed keyword gets an error, not an unsigned entry.
  const { authorUserId, authorDeviceId } = author(ALICE);
  await throwsAsync(() => cr1.buildEntry(null, new cr1.CreateBody(ALICE.uikPub, [ALICE.d.cert]), {
    authorSeed: ALICE.d.dskSeed, authorUserId, authorDeviceId, createdMs: T0, caseId: CASE_ID,
  }), 'bad_key');
});

test('a WebCrypto key that is not the certified DSK cannot speak for the device', async () => {
  const { entry: e0 } = await cr1.buildEntry(null, new cr1.CreateBody(ALICE.uikPub, [ALICE.d.cert]),
    { ...author(ALICE), createdMs: T0, caseId: CASE_ID });
  const { entry: e1, epochKey } = await cr1.buildEntry(e0, new cr1.AddUserBody(BOB.userId, cr1.Role.MEMBER, BOB.uikPub, [BOB.d.cert]),
    { ...author(ALICE), createdMs: T0 + 1 });
  // An attacker's own non-extractable key, signing as Alice's device.
  const { signer: mallory } = await cr1.generateDeviceSigner({ webCrypto: true });
  const env = await cr1.sealMessage({
    signer: mallory, epochKey, caseId: CASE_ID, epoch: e1.epoch, logHead: e1.entryHash(),
    senderUserId: ALICE.userId, senderDeviceId: ALICE.d.deviceId, senderSeq: 1, sentMs: T0 + 5,
    contentType: 'text', body: { text: 'not Alice' },
  });
  assert.throws(() => cr1.verifyEnvelope(env, cr1.checkSender(env, e1)), (err) => err.code === 'bad_signature');
  // And its log entry is refused before it is ever returned.
  await throwsAsync(() => cr1.buildEntry(e1, new cr1.RotateBody(), {
    signer: mallory, authorUserId: ALICE.userId, authorDeviceId: ALICE.d.deviceId, createdMs: T0 + 2,
  }), 'bad_signature');
  // The same for a proof: it verifies only under the attacker's key.
  const challenge = new Uint8Array(32).fill(5);
  const sig = await cr1.signWsProof(mallory, challenge, CASE_ID, ALICE.d.deviceId);
  assert.throws(() => cr1.verifyWsProof(ALICE.d.dskPub, sig, challenge, CASE_ID, ALICE.d.deviceId), (err) => err.code === 'bad_signature');
});

test('newDevice certifies the WebCrypto public key, and what it signs verifies under the certificate', async () => {
  const dev = await newDevice(ALICE.userId, ALICE.uikSeed, 'laptop');
  assert.equal(dev.signer.kind, 'webcrypto');
  assert.equal(dev.dskSeed, null, 'no seed exists anywhere for a WebCrypto DSK');
  assert.equal(dev.dskKey.extractable, false);
  const cert = cr1.DeviceCert.fromWire(dev.cert);
  cr1.verifyDeviceCert(cert, ALICE.uikPub);
  assert.deepEqual(cert.dskPub, dev.signer.publicKey);
  const { entry } = await cr1.buildEntry(null, new cr1.CreateBody(ALICE.uikPub, [cert]), {
    signer: dev.signer, authorUserId: ALICE.userId, authorDeviceId: dev.deviceId, createdMs: T0, caseId: CASE_ID,
  });
  cr1.verifyEntry(null, cr1.LogEntry.decode(entry.encode()));
  const legacy = await newDevice(ALICE.userId, ALICE.uikSeed, 'old browser', { webCrypto: false });
  assert.equal(legacy.signer.kind, 'tweetnacl');
  assert.equal(legacy.dskKey, null);
  assert.deepEqual(cr1.DeviceCert.fromWire(legacy.cert).dskPub, cr1.ed25519Public(legacy.dskSeed));
});

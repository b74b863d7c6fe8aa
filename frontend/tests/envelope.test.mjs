// Messages: seal and open, server-side checks, receivers' replay guard.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import * as cr1 from '../static/collab/cr1/index.js';
import {
  ALICE, BOB, CAROL, CASE_ID, T0, V, author, seed, throwsAsync, throwsCode, utf8,
} from './helpers.mjs';

const { Role } = cr1;
const { entry: e0 } = await cr1.buildEntry(null, new cr1.CreateBody(ALICE.uikPub, ALICE.devices.map((d) => d.cert)),
  { ...author(ALICE), createdMs: T0, caseId: CASE_ID });
const { entry: e1, epochKey: k1 } = await cr1.buildEntry(e0, new cr1.AddUserBody(BOB.userId, Role.MEMBER, BOB.uikPub, [BOB.d.cert]),
  { ...author(ALICE), createdMs: T0 + 1 });

async function seal(overrides = {}) {
  return await cr1.sealMessage({
    signer: ALICE.d.dskSeed,
    epochKey: k1,
    caseId: CASE_ID,
    epoch: e1.epoch,
    logHead: e1.entryHash(),
    senderUserId: ALICE.userId,
    senderDeviceId: ALICE.d.deviceId,
    senderSeq: 1,
    sentMs: T0 + 5,
    contentType: 'text',
    body: { text: 'hello', priority: 'normal' },
    ...overrides,
  });
}

/** A forged envelope: change header fields, re-sign so only the target check fails. */
function resign(env, changes, ct = env.ct) {
  const header = env.header.replace(changes);
  return new cr1.Envelope(header, ct, cr1.sign(ALICE.d.dskSeed, header.encode()));
}

describe('seal and open', async () => {
  test('the recipient opens what the sender sealed (via the wire)', async () => {
    const env = await seal();
    const wire = JSON.parse(JSON.stringify(env.toWire()));
    const got = cr1.Envelope.fromWire(wire);
    const dsk = cr1.checkSender(got, e1);
    const kBob = cr1.openWrap(e1, BOB.d.deviceId, BOB.d.dxkSecret);
    assert.deepEqual(cr1.openEnvelope(got, kBob, { senderDskPub: dsk }), { text: 'hello', priority: 'normal' });
    assert.deepEqual(cr1.Header.decode(got.header.encode()).encode(), env.header.encode());
  });

  test('bodies: deterministic JSON, bytes accepted as is, any JSON object received', async () => {
    assert.equal(new TextDecoder().decode(cr1.encodeBody({ b: [1, { z: null, a: true }], a: 'é"\n' })),
      '{"a":"é\\"\\n","b":[1,{"a":true,"z":null}]}');
    // Keys sort by code point like Python (U+FF5E before U+1F600, unlike UTF-16 order).
    assert.equal(new TextDecoder().decode(cr1.encodeBody({ '\u{1F600}': 1, '\uFF5E': 2 })), '{"\uFF5E":2,"\u{1F600}":1}');
    throwsCode(() => cr1.encodeBody({ x: NaN }), 'bad_body');
    const env = await seal({ body: utf8('{ "text" : "spaced" }') });
    assert.deepEqual(cr1.openEnvelope(env, k1, { senderDskPub: ALICE.d.dskPub }), { text: 'spaced' });
    for (const bad of ['[1]', 'null', '"x"', '{', '\uFEFF{}']) {
      await throwsAsync(async () => cr1.openEnvelope(await seal({ body: utf8(bad) }), k1, { senderDskPub: ALICE.d.dskPub }), 'bad_body');
    }
    const invalidUtf8 = await seal({ body: new Uint8Array([0x7b, 0xff, 0x7d]) });
    throwsCode(() => cr1.openEnvelope(invalidUtf8, k1, { senderDskPub: ALICE.d.dskPub }), 'bad_body');
  });

  test('attachments in the body must match the signed header', async () => {
    const m = cr1.Manifest.fromWire(V.attachment.manifest);
    const ref = new cr1.AttachmentRef(m.blobId, m.root);
    const ok = await seal({ body: { text: 'img', attachments: [m.toWire()] }, attachments: [ref] });
    assert.equal(cr1.openEnvelope(ok, k1, { senderDskPub: ALICE.d.dskPub }).attachments[0].blob_id, m.blobId);
    const missing = await seal({ body: { text: 'img' }, attachments: [ref] });
    throwsCode(() => cr1.openEnvelope(missing, k1, { senderDskPub: ALICE.d.dskPub }), 'inner_mismatch');
    const extra = await seal({ body: { attachments: [m.toWire()] } });
    throwsCode(() => cr1.openEnvelope(extra, k1, { senderDskPub: ALICE.d.dskPub }), 'inner_mismatch');
    const notList = await seal({ body: { attachments: {} } });
    throwsCode(() => cr1.openEnvelope(notList, k1, { senderDskPub: ALICE.d.dskPub }), 'bad_body');
    const badManifest = await seal({ body: { attachments: [{ blob_id: 'x' }] } });
    throwsCode(() => cr1.openEnvelope(badManifest, k1, { senderDskPub: ALICE.d.dskPub }), 'bad_body');
  });

  test('inner fields must equal the header', async () => {
    const env = await seal();
    const lying = env.header.replace({ senderSeq: 7 });
    const ct = cr1.secretboxSeal(k1, env.header.nonce, cr1.innerBytes(lying, utf8('{}')));
    const forged = resign(env, { ctLen: ct.length, ctHash: cr1.sha512(ct) }, ct);
    throwsCode(() => cr1.openEnvelope(forged, k1, { senderDskPub: ALICE.d.dskPub }), 'inner_mismatch');
    // Trailing bytes after the body.
    const inner = cr1.concat(cr1.innerBytes(env.header, utf8('{}')), new Uint8Array(1));
    const ct2 = cr1.secretboxSeal(k1, env.header.nonce, inner);
    const forged2 = resign(env, { ctLen: ct2.length, ctHash: cr1.sha512(ct2) }, ct2);
    throwsCode(() => cr1.openEnvelope(forged2, k1, { senderDskPub: ALICE.d.dskPub }), 'inner_mismatch');
    throwsCode(() => cr1.openEnvelope(env, seed('wrong key'), { senderDskPub: ALICE.d.dskPub }), 'decrypt_failed');
  });
});

describe('verifyEnvelope and checkSender', async () => {
  const env = await seal();

  test('check order: version, signature, ct_len, H(ct), size', async () => {
    cr1.verifyEnvelope(env, ALICE.d.dskPub);
    throwsCode(() => cr1.verifyEnvelope(resign(env, { version: 2 }), ALICE.d.dskPub), 'unsupported_version');
    throwsCode(() => cr1.verifyEnvelope(env, BOB.d.dskPub), 'bad_signature');
    throwsCode(() => cr1.verifyEnvelope(resign(env, { ctLen: env.ct.length + 1 }), ALICE.d.dskPub), 'bad_length');
    const tampered = new Uint8Array(env.ct);
    tampered[0] ^= 1;
    throwsCode(() => cr1.verifyEnvelope(new cr1.Envelope(env.header, tampered, env.sig), ALICE.d.dskPub), 'bad_hash');
    throwsCode(() => cr1.verifyEnvelope(env, ALICE.d.dskPub, { maxCtLen: 10 }), 'too_large');
  });

  test('sender must be in the roster of the named head', async () => {
    assert.deepEqual(cr1.checkSender(env, e1), ALICE.d.dskPub);
    throwsCode(() => cr1.checkSender(env, e0), 'wrong_epoch');
    throwsCode(() => cr1.checkSender(resign(env, { caseId: 'c0000000-0000-4000-8000-000000000009' }), e1), 'wrong_case');
    throwsCode(() => cr1.checkSender(resign(env, { logHead: e0.entryHash() }), e1), 'stale_head');
    throwsCode(() => cr1.checkSender(resign(env, { senderUserId: BOB.userId }), e1), 'unauthorized_author');
    throwsCode(() => cr1.checkSender(resign(env, { senderDeviceId: CAROL.d.deviceId }), e1), 'unauthorized_author');
  });

  test('fromWire is strict', async () => {
    const wire = env.toWire();
    throwsCode(() => cr1.Envelope.fromWire({ ...wire, v: 2 }), 'unsupported_version');
    throwsCode(() => cr1.Envelope.fromWire({ ...wire, v: '1' }), 'bad_field');
    throwsCode(() => cr1.Envelope.fromWire({ ...wire, content_type: 'text plain' }), 'bad_field');
    throwsCode(() => cr1.Envelope.fromWire({ ...wire, content_type: '' }), 'bad_field');
    throwsCode(() => cr1.Envelope.fromWire({ ...wire, content_type: 'é' }), 'bad_field');
    throwsCode(() => cr1.Envelope.fromWire({ ...wire, content_type: 'x'.repeat(65) }), 'bad_field');
    throwsCode(() => cr1.Envelope.fromWire({ ...wire, nonce: wire.nonce.slice(4) }), 'bad_length');
    throwsCode(() => cr1.Envelope.fromWire({ ...wire, ct: `${wire.ct} ` }), 'bad_base64');
    throwsCode(() => cr1.Envelope.fromWire({ ...wire, attachments: new Array(65).fill({}) }), 'bad_length');
    throwsCode(() => cr1.Envelope.fromWire({ ...wire, sender_seq: -1 }), 'bad_field');
    throwsCode(() => cr1.Envelope.fromWire({ ...wire, ct_len: 2 ** 32 }), 'bad_field');
    const bytes = env.header.encode();
    throwsCode(() => cr1.Header.decode(cr1.concat(bytes, new Uint8Array(1))), 'bad_length');
    const v2 = new Uint8Array(bytes);
    v2[8] = 2;
    throwsCode(() => cr1.Header.decode(v2), 'unsupported_version');
  });
});

describe('ReplayGuard', async () => {
  test('drops replays, reports gaps per device', async () => {
    const guard = new cr1.ReplayGuard();
    const h = (seq, id = seed(`id${seq}`).slice(0, 16), device = ALICE.d.deviceId) =>
      new cr1.Header({ ...seal().header, senderSeq: seq, clientMsgId: id, senderDeviceId: device });
    assert.equal(guard.accept(h(1)), null);
    assert.equal(guard.accept(h(2)), null);
    throwsCode(() => guard.accept(h(2)), 'replay');
    throwsCode(() => guard.accept(h(5, seed('id1').slice(0, 16))), 'replay'); // seen id
    throwsCode(() => guard.accept(h(1, seed('fresh').slice(0, 16))), 'replay'); // old seq
    const gap = guard.accept(h(6));
    assert.deepEqual({ ...gap }, { deviceId: ALICE.d.deviceId, firstMissing: 3, lastMissing: 5 });
    // Another device has its own sequence.
    assert.equal(guard.accept(h(1, seed('id1').slice(0, 16), ALICE.devices[1].deviceId)), null);
    // check() does not remember.
    assert.equal(guard.check(h(7)), null);
    assert.equal(guard.check(h(7)), null);
  });
});

test('sealMessage refuses bad inputs', async () => {
  await throwsAsync(async () => await seal({ contentType: 'a b' }), 'bad_field');
  await throwsAsync(async () => await seal({ epochKey: new Uint8Array(31) }), 'bad_length');
  await throwsAsync(async () => await seal({ clientMsgId: new Uint8Array(15) }), 'bad_length');
});

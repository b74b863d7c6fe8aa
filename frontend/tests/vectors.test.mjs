// The shared vector file (collab/crypto/vectors/cr1.json): every positive
// vector reproduces the exact bytes, every negative one is rejected with
// exactly the listed code. Mirrors tests/crypto/test_vectors.py.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import * as cr1 from '../static/collab/cr1/index.js';
import { ALICE, BOB, CAROL, V, b, hx, person, throwsCode, webCryptoSignerFromSeed } from './helpers.mjs';

// Everything the device signing key signs is checked through both signers: tweetnacl
// over the seed and WebCrypto Ed25519 over the same key imported (Ed25519 is
// deterministic, so both must give the vectors' exact bytes).
const SIGNERS = ['tweetnacl', 'webcrypto'];
const signerOf = async (kind, seed) => (kind === 'webcrypto' ? webCryptoSignerFromSeed(seed) : cr1.seedSigner(seed));

describe('primitive vectors', () => {
  const p = V.primitives;
  test('sha512', () => {
    for (const item of p.sha512) assert.equal(hx(cr1.sha512(b(item.input))), item.output);
  });
  test('ed25519', () => {
    const ed = p.ed25519;
    assert.equal(hx(cr1.ed25519Public(b(ed.seed))), ed.public);
    assert.equal(hx(cr1.sign(b(ed.seed), b(ed.message))), ed.signature);
    cr1.verify(b(ed.public), b(ed.message), b(ed.signature));
  });
  test('box', () => {
    const bx = p.box;
    assert.equal(hx(cr1.x25519Public(b(bx.sender_secret))), bx.sender_public);
    assert.equal(hx(cr1.x25519Public(b(bx.recipient_secret))), bx.recipient_public);
    const ct = cr1.boxSeal(b(bx.sender_secret), b(bx.recipient_public), b(bx.nonce), b(bx.plaintext));
    assert.equal(hx(ct), bx.ciphertext);
    assert.equal(hx(cr1.boxOpen(b(bx.recipient_secret), b(bx.sender_public), b(bx.nonce), ct)), bx.plaintext);
  });
  test('secretbox', () => {
    const sb = p.secretbox;
    const ct = cr1.secretboxSeal(b(sb.key), b(sb.nonce), b(sb.plaintext));
    assert.equal(hx(ct), sb.ciphertext);
    assert.equal(hx(cr1.secretboxOpen(b(sb.key), b(sb.nonce), ct)), sb.plaintext);
  });
});

test('people: keys and certificates match their seeds (JS fixtures = Python fixtures)', () => {
  const js = { alice: ALICE, bob: BOB, carol: CAROL };
  for (const [name, pv] of Object.entries(V.people)) {
    assert.equal(hx(cr1.ed25519Public(b(pv.uik_seed))), pv.uik_pub);
    assert.equal(hx(js[name].uikSeed), pv.uik_seed);
    assert.equal(js[name].userId, pv.user_id);
    pv.devices.forEach((d, i) => {
      assert.equal(hx(cr1.ed25519Public(b(d.dsk_seed))), d.dsk_pub);
      assert.equal(hx(cr1.x25519Public(b(d.dxk_secret))), d.dxk_pub);
      const mine = js[name].devices[i];
      assert.equal(mine.deviceId, d.device_id);
      assert.equal(hx(mine.cert.certSig), d.cert_sig);
    });
  }
  assert.equal(person('alice', 1, 2).devices.length, 2);
});

test('device certificate vector', () => {
  const d = V.devcert;
  const msg = cr1.certBytes(d.user_id, d.device_id, b(d.dsk_pub), b(d.dxk_pub), d.not_before_ms);
  assert.equal(hx(msg), d.signed_bytes);
  assert.equal(hx(cr1.sign(b(d.uik_seed), msg)), d.cert_sig);
  const cert = cr1.DeviceCert.fromWire(d.wire);
  assert.equal(hx(cert.encode()), d.roster_record);
  assert.deepEqual(cert.toWire(), d.wire);
  cr1.verifyDeviceCert(cert, b(d.uik_pub));
  cr1.verifyDeviceCert(cert, b(d.uik_pub), d.not_before_ms);
  throwsCode(() => cr1.verifyDeviceCert(cert, b(d.uik_pub), d.not_before_ms - 1), 'bad_certificate');
  const made = cr1.makeDeviceCert(b(d.uik_seed), d.user_id, d.device_id, b(d.dsk_pub), b(d.dxk_pub), d.not_before_ms);
  assert.equal(hx(made.encode()), d.roster_record);
});

for (const kind of SIGNERS) {
test(`log vectors (${kind} signer): roster, key commit, wraps, signed bytes, signature, hash, wire`, async () => {
  let prev = null;
  const entries = [];
  for (const item of V.log.entries) {
    const i = item.inputs;
    const decoded = cr1.LogEntry.decode(b(item.entry_bytes));
    assert.equal(hx(decoded.roster.encode()), item.roster_bytes);
    const e = await cr1.sealEntry({
      signer: await signerOf(kind, b(i.author_dsk_seed)),
      caseId: i.case_id,
      epoch: i.epoch,
      prevHash: b(i.prev_hash),
      authorUserId: i.author_user_id,
      authorDeviceId: i.author_device_id,
      createdMs: i.created_ms,
      action: i.action,
      actionBody: b(i.action_body),
      roster: decoded.roster,
      epochKey: b(i.epoch_key),
      epkSecret: b(i.epk_secret),
    });
    assert.equal(hx(e.keyCommit), item.key_commit);
    assert.equal(hx(cr1.keyCommit(b(i.epoch_key), i.case_id, i.epoch)), item.key_commit);
    assert.equal(hx(e.epk), item.epk);
    assert.equal(hx(e.signedBytes()), item.signed_bytes);
    assert.equal(hx(e.signature), item.signature);
    assert.equal(hx(e.encode()), item.entry_bytes);
    assert.equal(hx(e.entryHash()), item.entry_hash);
    assert.equal(hx(decoded.entryHash()), item.entry_hash);
    assert.deepEqual(e.toWire(), item.wire);
    const fromWire = cr1.LogEntry.fromWire(item.wire);
    assert.ok(fromWire.equals(e));
    assert.equal(hx(cr1.LogEntry.fromWire(JSON.parse(JSON.stringify(item.wire))).encode()), item.entry_bytes);
    cr1.verifyEntry(prev, e);
    e.wraps.forEach((w, n) => {
      const wv = item.wraps[n];
      assert.equal(w.deviceId, wv.device_id);
      assert.equal(hx(w.ciphertext), wv.ciphertext);
      assert.equal(hx(cr1.wrapNonce(e.epk, w.deviceId, e.epoch)), wv.nonce);
      assert.equal(hx(cr1.wrapPlaintext(e.caseId, e.epoch, e.prevHash, w.deviceId, b(i.epoch_key))), wv.plaintext);
      assert.equal(hx(cr1.openWrap(e, w.deviceId, b(wv.dxk_secret))), i.epoch_key);
    });
    entries.push(e);
    prev = e;
  }
  assert.deepEqual(entries[1].prevHash, entries[0].entryHash());
  assert.equal(cr1.verifyChain(entries).length, 2);
});

test(`log vectors (${kind} signer): buildEntry reproduces the entries from bodies`, async () => {
  const [v0, v1] = V.log.entries;
  const signer = await signerOf(kind, ALICE.d.dskSeed);
  const { entry: e0 } = await cr1.buildEntry(null, new cr1.CreateBody(ALICE.uikPub, ALICE.devices.map((d) => d.cert)), {
    signer, authorUserId: ALICE.userId, authorDeviceId: ALICE.d.deviceId,
    createdMs: v0.inputs.created_ms, caseId: v0.inputs.case_id,
    epochKey: b(v0.inputs.epoch_key), epkSecret: b(v0.inputs.epk_secret),
  });
  assert.equal(hx(e0.encode()), v0.entry_bytes);
  const { entry: e1 } = await cr1.buildEntry(e0, new cr1.AddUserBody(BOB.userId, cr1.Role.MEMBER, BOB.uikPub, [BOB.d.cert]), {
    signer, authorUserId: ALICE.userId, authorDeviceId: ALICE.d.deviceId,
    createdMs: v1.inputs.created_ms, epochKey: b(v1.inputs.epoch_key), epkSecret: b(v1.inputs.epk_secret),
  });
  assert.equal(hx(e1.encode()), v1.entry_bytes);
});
}

function attachmentChunks() {
  const a = V.attachment;
  const content = new Uint8Array(a.size);
  for (let i = 0; i < a.size; i++) content[i] = i % 251;
  const enc = new cr1.AttachmentEncryptor(b(a.key), b(a.prefix));
  return { content, enc, chunks: enc.encrypt(content) };
}

test('attachment vector: chunk nonces, ciphertexts, root, manifest', () => {
  const a = V.attachment;
  const { content, enc, chunks } = attachmentChunks();
  assert.equal(hx(cr1.sha512(content)), a.plaintext_sha512);
  assert.equal(chunks.length, a.chunks.length);
  a.chunks.forEach((cv, i) => {
    assert.equal(hx(cr1.chunkNonce(b(a.prefix), cv.index, i === chunks.length - 1)), cv.nonce);
    assert.equal(chunks[i].length, cv.ct_len);
    assert.equal(hx(cr1.sha512(chunks[i])), cv.ct_sha512);
    assert.equal(hx(chunks[i].subarray(0, 32)), cv.ct_head);
  });
  assert.equal(hx(chunks.at(-1)), a.last_chunk_ct);
  const m = cr1.Manifest.fromWire(a.manifest);
  const mine = enc.manifest(m.blobId, { mime: m.mime, width: m.width, height: m.height });
  assert.equal(hx(mine.root), a.root);
  assert.equal(hx(m.root), a.root);
  assert.deepEqual(mine.toWire(), a.manifest);
  // Server-side root check and decryption of the stored blob.
  const blob = cr1.concat(...chunks);
  const hasher = new cr1.RootHasher();
  hasher.update(blob.subarray(0, 1000));
  hasher.update(blob.subarray(1000));
  hasher.verify(b(a.root), cr1.ciphertextSize(a.size));
  assert.deepEqual(cr1.decryptBlob(blob, m), content);
});

test('message vector: body, inner, header, ciphertext, signature, wire', async () => {
  const msg = V.message;
  const env = cr1.Envelope.fromWire(msg.wire);
  assert.equal(hx(env.header.encode()), msg.header_bytes);
  assert.equal(hx(cr1.innerBytes(env.header, b(msg.body_bytes))), msg.inner_bytes);
  assert.equal(hx(cr1.secretboxSeal(b(msg.epoch_key), env.header.nonce, b(msg.inner_bytes))), msg.ct);
  assert.equal(hx(cr1.sign(b(msg.sender_dsk_seed), env.header.encode())), msg.sig);
  assert.deepEqual(env.toWire(), msg.wire);
  assert.deepEqual(cr1.Header.decode(b(msg.header_bytes)).encode(), b(msg.header_bytes));
  const body = cr1.openEnvelope(env, b(msg.epoch_key), { senderDskPub: b(msg.sender_dsk_pub) });
  assert.equal(hx(cr1.encodeBody(body)), msg.body_bytes);
  // Sealing from the same inputs gives the same envelope.
  const e1 = cr1.LogEntry.decode(b(V.log.entries[1].entry_bytes));
  const h = env.header;
  for (const kind of SIGNERS) {
  const sealed = await cr1.sealMessage({
    signer: await signerOf(kind, b(msg.sender_dsk_seed)), epochKey: b(msg.epoch_key), caseId: h.caseId, epoch: h.epoch,
    logHead: h.logHead, senderUserId: h.senderUserId, senderDeviceId: h.senderDeviceId,
    senderSeq: h.senderSeq, sentMs: h.sentMs, contentType: h.contentType, body,
    attachments: h.attachments, clientMsgId: h.clientMsgId, nonce: h.nonce,
  });
  assert.deepEqual(sealed.toWire(), msg.wire, kind);
  }
  assert.deepEqual(cr1.checkSender(env, e1), b(msg.sender_dsk_pub));
});

test('replay gap vector', () => {
  const g = V.replay_gap;
  const guard = new cr1.ReplayGuard();
  const gaps = g.envelopes.map((w) => guard.accept(cr1.Envelope.fromWire(w).header));
  assert.equal(gaps[0], null);
  assert.deepEqual(
    [gaps[1].deviceId, gaps[1].firstMissing, gaps[1].lastMissing],
    [g.gap.device_id, g.gap.first_missing, g.gap.last_missing],
  );
});

test('safety number vector', () => {
  const s = V.safety_number;
  assert.equal(cr1.fingerprintDigits(s.a.user_id, b(s.a.uik_pub)), s.a_digits);
  assert.equal(cr1.fingerprintDigits(s.b.user_id, b(s.b.uik_pub)), s.b_digits);
  const groups = cr1.safetyNumber(s.a.user_id, b(s.a.uik_pub), s.b.user_id, b(s.b.uik_pub));
  assert.deepEqual(groups, s.groups);
  assert.deepEqual(cr1.safetyNumber(s.b.user_id, b(s.b.uik_pub), s.a.user_id, b(s.a.uik_pub)), s.groups);
});

test('invite vector: statement, proof and short code', async () => {
  const v = V.invite;
  const { seed, pub } = cr1.inviteKeypair(b(v.secret));
  assert.equal(hx(seed), v.invite_seed);
  assert.equal(hx(pub), v.invite_pub);
  assert.equal(hx(cr1.inviteStatementBytes(v.case_id, v.inviter_user, v.inviter_device, pub, v.created_ms)), v.statement_bytes);
  const alice = V.people.alice.devices[0];
  let sig;
  for (const kind of SIGNERS) {
    sig = await cr1.signInvitation(await signerOf(kind, b(alice.dsk_seed)), v.case_id, v.inviter_user, v.inviter_device, pub, v.created_ms);
    assert.equal(hx(sig), v.invite_sig, kind);
  }
  cr1.verifyInvitationStatement(b(alice.dsk_pub), v.case_id, v.inviter_user, v.inviter_device, pub, v.created_ms, sig);
  assert.equal(hx(cr1.inviteProofBytes(v.case_id, pub, v.patient_user, b(v.patient_uik))), v.proof_bytes);
  const proof = cr1.signInviteProof(seed, v.case_id, pub, v.patient_user, b(v.patient_uik));
  assert.equal(hx(proof), v.proof_sig);
  cr1.verifyInviteProof(pub, v.case_id, v.patient_user, b(v.patient_uik), proof);
  assert.deepEqual(cr1.shortCode(v.patient_user, b(v.patient_uik)), v.short_code);
});

test('pins vector: sealed and signed by the identity key', () => {
  const v = V.pins;
  assert.equal(hx(cr1.pinsKey(b(v.uik_seed))), v.key);
  const blob = cr1.sealPins(b(v.uik_seed), new TextEncoder().encode(v.plaintext), b(v.nonce));
  assert.equal(hx(blob), v.blob);
  assert.equal(new TextDecoder().decode(cr1.openPins(b(v.uik_seed), blob)), v.plaintext);
  assert.equal(hx(cr1.pinsSignedBytes(v.user_id, v.version, blob)), v.signed_bytes);
  const sig = cr1.signPins(b(v.uik_seed), v.user_id, v.version, blob);
  assert.equal(hx(sig), v.sig);
  cr1.verifyPins(cr1.ed25519Public(b(v.uik_seed)), v.user_id, v.version, blob, sig);
  throwsCode(() => cr1.openPins(cr1.sha512(b(v.uik_seed)).slice(0, 32), blob), 'decrypt_failed');
});

test('a binding checks the inviter device in a verified roster', () => {
  const v = V.invite;
  const e0 = cr1.LogEntry.decode(b(V.log.entries[0].entry_bytes));
  const inv = {
    createdBy: v.inviter_user, inviterDevice: v.inviter_device, invitePub: b(v.invite_pub),
    inviteSig: b(v.invite_sig), createdMs: v.created_ms, proofSig: b(v.proof_sig),
  };
  assert.equal(cr1.checkInvitation([e0], v.case_id, inv, v.patient_user, b(v.patient_uik)), 'bound');
  assert.equal(cr1.checkInvitation([e0], v.case_id, { ...inv, proofSig: null }, v.patient_user, b(v.patient_uik)), 'unbound');
  assert.equal(cr1.checkInvitation([e0], v.case_id, null, v.patient_user, b(v.patient_uik)), 'unbound');
  assert.equal(cr1.checkInvitation([e0], v.case_id, inv, v.patient_user, b(V.people.bob.uik_pub)), 'bad_proof');
  assert.equal(cr1.checkInvitation([], v.case_id, inv, v.patient_user, b(v.patient_uik)), 'bad_proof');
  const forged = { ...inv, inviteSig: new Uint8Array(64) };
  assert.equal(cr1.checkInvitation([e0], v.case_id, forged, v.patient_user, b(v.patient_uik)), 'bad_proof');
});

function runNegative(v) {
  switch (v.check) {
    case 'ed25519_verify':
      return cr1.verify(b(v.public), b(v.message), b(v.signature));
    case 'box_seal':
      return cr1.boxSeal(b(v.secret), b(v.peer_public), b(v.nonce), b(v.plaintext));
    case 'b64decode':
      return cr1.b64d(v.input, v.length);
    case 'verify_entry': {
      const prev = v.prev ? cr1.LogEntry.decode(b(v.prev)) : null;
      return cr1.verifyEntry(prev, cr1.LogEntry.decode(b(v.entry)));
    }
    case 'open_wrap': {
      const entry = cr1.LogEntry.decode(b(v.entry));
      cr1.verifyEntry(cr1.LogEntry.decode(b(v.prev)), entry); // passes: the server cannot tell
      return cr1.openWrap(entry, v.device_id, b(v.dxk_secret));
    }
    case 'verify_chain':
      return cr1.verifyChain(v.entries.map((h) => cr1.LogEntry.decode(b(h))));
    case 'replay_guard': {
      const guard = new cr1.ReplayGuard();
      v.envelopes.forEach((w, n) => {
        if (n === v.fails_at) guard.accept(cr1.Envelope.fromWire(w).header);
        guard.accept(cr1.Envelope.fromWire(w).header);
      });
      return undefined;
    }
    case 'open_envelope':
      return cr1.openEnvelope(cr1.Envelope.fromWire(v.envelope), b(v.epoch_key), { senderDskPub: b(v.sender_dsk_pub) });
    case 'verify_envelope':
      return cr1.verifyEnvelope(cr1.Envelope.fromWire(v.envelope), b(v.sender_dsk_pub));
    case 'decrypt_attachment': {
      const { chunks } = attachmentChunks();
      const dec = new cr1.AttachmentDecryptor(cr1.Manifest.fromWire(v.manifest));
      for (const i of v.chunk_order) dec.update(chunks[i]);
      return dec.finalize();
    }
    case 'verify_invite_proof':
      return cr1.verifyInviteProof(b(v.invite_pub), v.case_id, v.patient_user, b(v.patient_uik), b(v.sig));
    case 'verify_invitation':
      return cr1.verifyInvitationStatement(b(v.dsk_pub), v.case_id, v.inviter_user, v.inviter_device,
        b(v.invite_pub), v.created_ms, b(v.sig));
    case 'verify_pins':
      return cr1.verifyPins(b(v.uik_pub), v.user_id, v.version, b(v.blob), b(v.sig));
    case 'verify_http_proof':
      return cr1.verifyHttpProof(b(v.dsk_pub), b(v.sig), {
        deviceId: v.device_id, timeMs: v.time_ms, method: v.method, path: v.path,
        body: b(v.body), nonce: v.nonce, jti: b(v.jti),
      });
    case 'verify_ws_proof':
      return cr1.verifyWsProof(b(v.dsk_pub), b(v.sig), b(v.challenge), v.case_id, v.device_id);
    case 'open_backup_item':
      return cr1.openBackupItem(b(v.key), b(v.item), v.case_id, v.epoch);
    default:
      throw new Error(`unknown check ${v.check}`);
  }
}

describe('negative vectors', () => {
  for (const v of V.negative) {
    test(`${v.check}: ${v.name} -> ${v.error}`, () => throwsCode(() => runNegative(v), v.error));
  }
  test('cover the brief', () => {
    const errors = new Set(V.negative.map((v) => v.error));
    for (const code of ['non_canonical_signature', 'low_order_key', 'replay', 'stale_head',
      'unauthorized_author', 'chunk_order', 'truncated', 'inner_mismatch', 'fork', 'bad_proof']) {
      assert.ok(errors.has(code), code);
    }
  });
});

test('enrol vector: a new device joins by its identity key', async () => {
  const v = V.enrol;
  const d = v.device;
  const e1 = cr1.LogEntry.decode(b(v.prev));
  const bobId = e1.roster.users[1].userId;
  const cert = new cr1.DeviceCert(bobId, d.device_id, b(d.dsk_pub), b(d.dxk_pub), d.not_before_ms, b(d.cert_sig));
  assert.equal(hx(cr1.enrolBytes(e1.caseId, 2, e1.entryHash(), cert)), v.enrol_bytes);
  const body = cr1.signEnrol(b(V.people.bob.uik_seed), e1.caseId, 2, e1.entryHash(), cert);
  assert.equal(hx(body.uikSig), v.uik_sig);
  assert.equal(hx(body.encode()), v.action_body);
  let entry;
  let epochKey;
  for (const kind of SIGNERS) {
    ({ entry, epochKey } = await cr1.buildEntry(e1, body, {
      signer: await signerOf(kind, b(d.dsk_seed)), authorUserId: bobId, authorDeviceId: d.device_id,
      createdMs: v.created_ms, epochKey: b(v.epoch_key), epkSecret: b(v.epk_secret),
    }));
    assert.equal(hx(entry.encode()), v.entry_bytes, kind);
    assert.equal(hx(entry.entryHash()), v.entry_hash, kind);
  }
  cr1.verifyEntry(e1, cr1.LogEntry.decode(b(v.entry_bytes)));
  assert.equal(hx(cr1.openWrap(entry, d.device_id, b(d.dxk_secret))), hx(epochKey));
});

test('device proof vector: http and socket', async () => {
  const v = V.device_proof;
  const h = v.http;
  const fields = { deviceId: v.device_id, timeMs: h.time_ms, method: h.method, path: h.path, body: b(h.body), nonce: h.nonce, jti: b(h.jti) };
  assert.equal(hx(cr1.httpProofBytes(fields)), h.signed_bytes);
  const w = v.ws;
  assert.equal(hx(cr1.wsProofBytes(b(w.challenge), w.case_id, v.device_id)), w.signed_bytes);
  for (const kind of SIGNERS) {
    const signer = await signerOf(kind, b(v.dsk_seed));
    const sig = await cr1.signHttpProof(signer, fields);
    assert.equal(hx(sig), h.sig, kind);
    cr1.verifyHttpProof(b(v.dsk_pub), sig, fields);
    assert.equal(hx(await cr1.signWsProof(signer, b(w.challenge), w.case_id, v.device_id)), w.sig, kind);
  }
});

test('key backup vector', () => {
  const v = V.key_backup;
  const key = cr1.backupKey(b(v.uik_seed));
  assert.equal(hx(key), v.key);
  const item = cr1.sealBackupItem(key, v.case_id, v.epoch, b(v.epoch_key), b(v.nonce));
  assert.equal(hx(item), v.item);
  assert.equal(hx(cr1.openBackupItem(key, item, v.case_id, v.epoch)), v.epoch_key);
});

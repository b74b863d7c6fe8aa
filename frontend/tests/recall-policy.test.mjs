// The browser's recall policy (app/recall.js) on the shared vectors: a tombstone or a
// `recalled` frame is "recalled by the sender" only when the statement verifies with a
// device of the sender in the verified roster and names exactly the message; a recall
// the server forged, moved or made with another member's key is "removed by the
// server". The same scenarios as tests/e2e/test_recall_sdk.py (the SDK's policy).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import * as cr1 from '../static/collab/cr1/index.js';
import {
  PURGED, RECALLED, REMOVED_BY_SERVER, describeRemoval, judgeFrame, judgeTombstone, recallBody,
  recallRefusal, recallable, senderDeviceKey,
} from '../static/collab/app/recall.js';
import { BOB, V, b } from './helpers.mjs';

const R = V.recall;
const CHAIN = V.log.entries.map((e) => cr1.LogEntry.decode(b(e.entry_bytes)));
const CASE = V.log.case_id;
const HEADER = cr1.Header.decode(b(R.header_bytes));
const SENDER = HEADER.senderUserId;

function tombstone(recall, extra = {}) {
  return {
    seq: R.seq, stored_at: '2023-11-14T22:18:20+00:00', urgent: false,
    removed: { reason: 'recalled', at: '2023-11-14T22:20:00+00:00', sender_user_id: SENDER,
      sender_device_id: HEADER.senderDeviceId, recall, ...extra },
  };
}

const honest = () => ({ ...R.wire, sig: cr1.b64e(b(R.sig)) });

describe('recall policy', () => {
  test('the vector recall is the sender\'s, with and without the message held', () => {
    assert.ok(senderDeviceKey(CHAIN, SENDER, R.device_id));
    for (const known of [HEADER, null]) {
      const v = judgeTombstone(CASE, tombstone(honest()), CHAIN, known);
      assert.equal(v.verdict, RECALLED, v.detail);
      assert.equal(v.at, R.recalled_ms);
      assert.match(describeRemoval(v), /^Recalled by the sender at /);
    }
    const frame = { type: 'recalled', seq: R.seq, by: SENDER, at: 'x', device: R.device_id, sig: cr1.b64e(b(R.sig)), recall: R.wire };
    assert.equal(judgeFrame(CASE, frame, CHAIN, HEADER).verdict, RECALLED);
  });

  test('a tombstone without a statement is removed by the server; a purge says so', () => {
    const v = judgeTombstone(CASE, tombstone(null), CHAIN, HEADER);
    assert.deepEqual([v.verdict, v.senderUserId], [REMOVED_BY_SERVER, SENDER]);
    assert.match(describeRemoval(v), /^Removed by the server at /);
    assert.doesNotMatch(describeRemoval(v), /Recalled by the sender/);
    const purged = judgeTombstone(CASE, tombstone(null, { reason: 'purged' }), CHAIN, null);
    assert.equal(purged.verdict, PURGED);
  });

  const forged = [
    ['signed by a key of the server\'s', () => ({ ...R.wire, sig: cr1.b64e(cr1.sign(cr1.sha512(cr1.concat(b('00'))).slice(0, 32), b(R.statement_bytes))) }), 'bad_signature'],
    ['signed by another member (Bob) under his own device', () => {
      const statement = new cr1.Recall({ ...cr1.Recall.fromWire(R.wire), deviceId: BOB.d.deviceId });
      return { ...statement.toWire(), sig: cr1.b64e(cr1.sign(BOB.d.dskSeed, statement.encode())) };
    }, 'unauthorized_author'],
    ['moved to another seq', () => ({ ...R.wire, seq: R.seq + 1, sig: cr1.b64e(b(R.sig)) }), 'recall_mismatch'],
    ['a garbage signature', () => ({ ...R.wire, sig: 'AAAA' }), 'bad_length'],
  ];
  for (const [name, make, code] of forged) {
    test(`a recall ${name} is removed by the server (${code})`, () => {
      const v = judgeTombstone(CASE, tombstone(make()), CHAIN, HEADER);
      assert.deepEqual([v.verdict, v.detail], [REMOVED_BY_SERVER, code]);
    });
  }

  test('a statement for another header of the same seq is refused when the message is held', () => {
    const other = HEADER.replace({ sentMs: Number(HEADER.sentMs) + 1 });
    const v = judgeTombstone(CASE, tombstone(honest()), CHAIN, other);
    assert.deepEqual([v.verdict, v.detail], [REMOVED_BY_SERVER, 'recall_mismatch']);
  });

  // A device removed from the case (epoch 2) recalls: only the head roster or the roster
  // of the message's epoch may vouch for the recalling device (protocol-crypto §9e).
  const RV = R.revoked;
  const REVOKED_CHAIN = [...CHAIN, cr1.LogEntry.decode(b(RV.entry_bytes))];
  const REVOKED_HEADER = cr1.Header.decode(b(RV.header_bytes));
  for (const [name, known] of [['held', REVOKED_HEADER], ['not held', null]]) {
    test(`a recall by a device removed before the message is removed by the server (${name})`, () => {
      const item = { ...tombstone({ ...RV.wire, sig: cr1.b64e(b(RV.sig)) }), seq: RV.seq };
      const v = judgeTombstone(CASE, item, REVOKED_CHAIN, known);
      assert.deepEqual([v.verdict, v.detail], [REMOVED_BY_SERVER, RV.error]);
      const frame = { type: 'recalled', seq: RV.seq, by: SENDER, at: 'x', device: RV.wire.device_id, sig: cr1.b64e(b(RV.sig)), recall: RV.wire };
      assert.equal(judgeFrame(CASE, frame, REVOKED_CHAIN, known).detail, RV.error);
    });
  }

  test('a device removed since still recalls a message of its epoch when held', () => {
    const item = tombstone(honest());
    assert.equal(judgeTombstone(CASE, item, REVOKED_CHAIN, HEADER).verdict, RECALLED);
    // Without the header the message's epoch is unknown: only the head roster counts.
    const v = judgeTombstone(CASE, item, REVOKED_CHAIN, null);
    assert.deepEqual([v.verdict, v.detail], [REMOVED_BY_SERVER, 'unauthorized_author']);
  });

  test('the recall action is for the sender and inside the window only', () => {
    const stored = '2026-01-01T10:00:00+00:00';
    const t = Date.parse(stored);
    assert.equal(recallable({ senderUserId: 'me', storedAt: stored }, 'me', t + 14 * 60_000, 15), true);
    assert.equal(recallable({ senderUserId: 'me', storedAt: stored }, 'me', t + 15 * 60_000, 15), false);
    assert.equal(recallable({ senderUserId: 'them', storedAt: stored }, 'me', t, 15), false);
  });

  test('a recall refused for a legal hold tells the sender why', () => {
    assert.match(recallRefusal({ code: 'case_on_legal_hold' }), /legal hold.*cannot be withdrawn while it is held/);
    assert.equal(recallRefusal({ code: 'not_sender' }), ' Not recalled (not_sender).');
  });

  test('recallBody signs the vector statement', async () => {
    const body = await recallBody(cr1.seedSigner(b(R.dsk_seed)), HEADER, R.seq, R.device_id, R.recalled_ms);
    assert.deepEqual(body, { recalled_ms: R.recalled_ms, sig: cr1.b64e(b(R.sig)) });
  });
});

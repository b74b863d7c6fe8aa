// Recall statements (cr1/recall.js) against the shared vectors' `recall` section:
// the exact bytes and signature through both signers, and every forged or retargeted
// recall refused with its code. Mirrors tests/crypto/test_recall.py.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import * as cr1 from '../static/collab/cr1/index.js';
import { V, b, hx, throwsCode, webCryptoSignerFromSeed } from './helpers.mjs';

const R = V.recall;

function negativeRun(v) {
  const recall = cr1.Recall.fromWire(v.recall);
  if (v.check === 'verify_recall') return cr1.verifyRecall(b(v.dsk_pub), recall, b(v.sig));
  if (v.check === 'check_recall_names') {
    return cr1.checkRecallNames(recall, cr1.Header.decode(b(v.header)), v.seq);
  }
  throw new Error(`unknown check ${v.check}`);
}

describe('recall vectors', () => {
  test('statement bytes, hash and wire form', () => {
    const header = cr1.Header.decode(b(R.header_bytes));
    assert.equal(hx(cr1.headerHash(header)), R.header_hash);
    const recall = cr1.recallFor(header, { seq: R.seq, deviceId: R.device_id, recalledMs: R.recalled_ms });
    assert.equal(hx(recall.encode()), R.statement_bytes);
    assert.deepEqual(recall.toWire(), R.wire);
    assert.equal(hx(cr1.Recall.decode(recall.encode()).encode()), R.statement_bytes);
    assert.deepEqual(cr1.Recall.fromWire(R.wire).toWire(), R.wire);
    cr1.checkRecallNames(recall, header, R.seq);
  });

  for (const kind of ['tweetnacl', 'webcrypto']) {
    test(`signature through the ${kind} signer`, async () => {
      const signer = kind === 'webcrypto' ? await webCryptoSignerFromSeed(b(R.dsk_seed)) : cr1.seedSigner(b(R.dsk_seed));
      assert.equal(hx(signer.publicKey), R.dsk_pub);
      const sig = await cr1.signRecall(signer, cr1.Recall.fromWire(R.wire));
      assert.equal(hx(sig), R.sig);
      cr1.verifyRecall(b(R.dsk_pub), cr1.Recall.fromWire(R.wire), sig);
    });
  }

  test('trailing bytes and a wrong tag are refused', () => {
    const raw = b(R.statement_bytes);
    throwsCode(() => cr1.Recall.decode(cr1.concat(raw, new Uint8Array([0]))), 'bad_length');
    const wrong = Uint8Array.from(raw);
    wrong[0] ^= 1;
    throwsCode(() => cr1.Recall.decode(wrong), 'bad_field');
  });

  test('the negative set covers forgery, retargeting and another message', () => {
    assert.deepEqual(new Set(R.negative.map((v) => v.error)), new Set(['bad_signature', 'recall_mismatch']));
  });

  for (const v of R.negative) {
    test(`negative: ${v.check}: ${v.name}`, () => throwsCode(() => negativeRun(v), v.error));
  }
});

// The extra checks that make tweetnacl accept exactly what libsodium (the
// Python side) accepts, plus encoding and strict base64.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import nacl from '../static/collab/cr1/nacl.js';
import * as cr1 from '../static/collab/cr1/index.js';
import { L, P, leInt } from '../static/collab/cr1/primitives.js';
import { u64, u8 } from '../static/collab/cr1/encoding.js';
import { V, b, seed, throwsCode, utf8 } from './helpers.mjs';

function le32(n) {
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = Number((n >> BigInt(8 * i)) & 0xffn);
  return out;
}

const ED_SEED = seed('prim/ed25519');
const PUB = cr1.ed25519Public(ED_SEED);
const MSG = utf8('CR1 test message');
const SIG = cr1.sign(ED_SEED, MSG);

describe('Ed25519', () => {
  test('a valid signature verifies', () => cr1.verify(PUB, MSG, SIG));

  test('S + L: tweetnacl alone accepts it, CR1 rejects it as non_canonical_signature', () => {
    const forged = cr1.concat(SIG.subarray(0, 32), le32(leInt(SIG.subarray(32)) + L));
    assert.equal(nacl.sign.detached.verify(MSG, forged, PUB), true);
    throwsCode(() => cr1.verify(PUB, MSG, forged), 'non_canonical_signature');
    // Any S >= L, even one that could not verify.
    throwsCode(() => cr1.verify(PUB, MSG, cr1.concat(SIG.subarray(0, 32), le32(L))), 'non_canonical_signature');
    throwsCode(() => cr1.verify(PUB, MSG, cr1.concat(SIG.subarray(0, 32), new Uint8Array(32).fill(0xff))), 'non_canonical_signature');
  });

  test('small-order public keys are low_order_key, with or without the sign bit', () => {
    const ys = [0n, 1n, P - 1n, P, P + 1n,
      2707385501144840649318225287225658788936804267575313519463743609750303402022n];
    ys.push(P - ys[5]);
    for (const y of ys) {
      const key = le32(y);
      throwsCode(() => cr1.verify(key, MSG, SIG), 'low_order_key');
      key[31] |= 0x80;
      throwsCode(() => cr1.checkEd25519Public(key), 'low_order_key');
    }
  });

  test('non-canonical public keys (y >= p) are bad_key', () => {
    for (const y of [P + 2n, P + 5n, 2n ** 255n - 1n]) {
      throwsCode(() => cr1.checkEd25519Public(le32(y)), 'bad_key');
      const signed = le32(y);
      signed[31] |= 0x80;
      throwsCode(() => cr1.verify(signed, MSG, SIG), 'bad_key');
    }
  });

  test('small-order R is bad_signature', () => {
    for (const y of [0n, 1n, P - 1n]) {
      const sig = cr1.concat(le32(y), SIG.subarray(32));
      throwsCode(() => cr1.verify(PUB, MSG, sig), 'bad_signature');
    }
  });

  test('lengths, tampering and the wrong key', () => {
    throwsCode(() => cr1.verify(PUB.subarray(0, 31), MSG, SIG), 'bad_length');
    throwsCode(() => cr1.verify(PUB, MSG, SIG.subarray(0, 63)), 'bad_length');
    throwsCode(() => cr1.verify(PUB, utf8('other'), SIG), 'bad_signature');
    const other = cr1.ed25519Public(seed('other'));
    throwsCode(() => cr1.verify(other, MSG, SIG), 'bad_signature');
    throwsCode(() => cr1.sign(ED_SEED.subarray(1), MSG), 'bad_length');
    throwsCode(() => cr1.ed25519Public(new Uint8Array(31)), 'bad_length');
  });

  test('a key that is not a curve point fails as bad_signature (like libsodium)', () => {
    // y = 2 is canonical and not small order but not on the curve.
    throwsCode(() => cr1.verify(le32(2n), MSG, SIG), 'bad_signature');
  });
});

describe('X25519 crypto_box', () => {
  const a = seed('prim/box/a');
  const bsec = seed('prim/box/b');
  const bpub = cr1.x25519Public(bsec);
  const nonce = new Uint8Array(24);

  test('all-zero key: tweetnacl alone encrypts to it, CR1 refuses with low_order_key', () => {
    const zero = new Uint8Array(32);
    assert.ok(nacl.box(utf8('x'), nonce, zero, a) instanceof Uint8Array);
    throwsCode(() => cr1.boxSeal(a, zero, nonce, utf8('x')), 'low_order_key');
    throwsCode(() => cr1.boxOpen(a, zero, nonce, new Uint8Array(17)), 'low_order_key');
  });

  test('every small-order u, with and without the top bit, is low_order_key', () => {
    const us = [0n, 1n, P - 1n, P, P + 1n,
      325606250916557431795983626356110631294008115727848805560023387167927233504n,
      39382357235489614581723060781553021112529911719440698176882885853963445705823n];
    for (const u of us) {
      const key = le32(u);
      throwsCode(() => cr1.boxSeal(a, key, nonce, utf8('x')), 'low_order_key');
      key[31] |= 0x80;
      throwsCode(() => cr1.checkX25519Public(key), 'low_order_key');
    }
  });

  test('non-canonical keys are bad_key: u >= p, or the top bit set', () => {
    throwsCode(() => cr1.checkX25519Public(le32(P + 2n)), 'bad_key');
    const top = new Uint8Array(bpub);
    top[31] |= 0x80; // tweetnacl would silently use `bpub`
    throwsCode(() => cr1.boxSeal(a, top, nonce, utf8('x')), 'bad_key');
  });

  test('round trip, decrypt_failed and lengths', () => {
    const ct = cr1.boxSeal(a, bpub, nonce, utf8('hello'));
    assert.deepEqual(cr1.boxOpen(bsec, cr1.x25519Public(a), nonce, ct), utf8('hello'));
    const bad = new Uint8Array(ct);
    bad[0] ^= 1;
    throwsCode(() => cr1.boxOpen(bsec, cr1.x25519Public(a), nonce, bad), 'decrypt_failed');
    throwsCode(() => cr1.boxOpen(bsec, cr1.x25519Public(a), nonce, ct.subarray(0, 15)), 'bad_length');
    throwsCode(() => cr1.boxSeal(a, bpub, nonce.subarray(1), utf8('x')), 'bad_length');
    throwsCode(() => cr1.boxSeal(a.subarray(1), bpub, nonce, utf8('x')), 'bad_length');
    throwsCode(() => cr1.boxSeal(a, bpub.subarray(1), nonce, utf8('x')), 'bad_length');
  });
});

test('secretbox: round trip, decrypt_failed, lengths', () => {
  const sb = V.primitives.secretbox;
  const ct = cr1.secretboxSeal(b(sb.key), b(sb.nonce), b(sb.plaintext));
  assert.deepEqual(cr1.secretboxOpen(b(sb.key), b(sb.nonce), ct), b(sb.plaintext));
  const bad = new Uint8Array(ct);
  bad[bad.length - 1] ^= 1;
  throwsCode(() => cr1.secretboxOpen(b(sb.key), b(sb.nonce), bad), 'decrypt_failed');
  throwsCode(() => cr1.secretboxOpen(b(sb.key), b(sb.nonce), new Uint8Array(15)), 'bad_length');
  throwsCode(() => cr1.secretboxSeal(new Uint8Array(31), b(sb.nonce), ct), 'bad_length');
});

describe('strict base64', () => {
  test('canonical round trip at every padding length', () => {
    for (let n = 0; n < 10; n++) {
      const data = Uint8Array.from({ length: n }, (_, i) => (i * 37 + 250) & 0xff);
      const text = cr1.b64e(data);
      assert.equal(text, Buffer.from(data).toString('base64'));
      assert.deepEqual(cr1.b64d(text, n), data);
    }
  });
  test('rejections', () => {
    for (const bad of ['A', 'AAA', 'AA=A', 'AAB=', 'AAC=', 'AB==', 'AA AA===', '-_8=', 'AA==\n', ' AAAA',
      'AAAA====', 'A===', '=AAA', 'ÀAAA', 'AA\u0000=']) {
      throwsCode(() => cr1.b64d(bad), 'bad_base64', bad);
    }
    throwsCode(() => cr1.b64d(42), 'bad_base64');
    throwsCode(() => cr1.b64d(null), 'bad_base64');
    throwsCode(() => cr1.b64d('AAAA', 4), 'bad_length');
    assert.deepEqual(cr1.b64d('', 0), new Uint8Array(0));
  });
});

describe('canonical encoding', () => {
  test('u64 above 2^53 round-trips exactly through BigInt', () => {
    const v = 2n ** 63n + 12345n;
    const r = new cr1.Reader(u64(v));
    const got = r.u64();
    assert.equal(typeof got, 'bigint');
    assert.equal(got, v);
    assert.equal(new cr1.Reader(u64(2 ** 53 - 1)).u64(), 2 ** 53 - 1);
    throwsCode(() => u64(2n ** 64n), 'bad_field');
    throwsCode(() => u64(-1), 'bad_field');
    throwsCode(() => u64(1.5), 'bad_field');
    throwsCode(() => u8(256), 'bad_field');
    throwsCode(() => u8('1'), 'bad_field');
  });
  test('Reader is exact', () => {
    const r = new cr1.Reader(new Uint8Array(3));
    throwsCode(() => r.u32(), 'bad_length');
    const r2 = new cr1.Reader(new Uint8Array(3));
    r2.u16();
    throwsCode(() => r2.done(), 'bad_length');
    throwsCode(() => new cr1.Reader(utf8('CR1/x\0')).tag(utf8('CR1/y\0')), 'bad_field');
  });
  test('UUIDs: canonical strings only', () => {
    const id = '00000000-0000-4000-8000-0000000000ab';
    assert.equal(cr1.uuidFromBytes(cr1.uuidBytes(id)), id);
    throwsCode(() => cr1.uuidBytes(id.toUpperCase()), 'bad_field');
    throwsCode(() => cr1.uuidBytes('0000000000004000800000000000000ab'), 'bad_field');
    assert.ok(cr1.isUuid(cr1.randomUuid(cr1.randomBytes)));
  });
});

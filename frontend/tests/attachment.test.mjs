// Attachments: chunked encryption round trips at the chunk boundaries,
// streaming in arbitrary pieces, the server's root check, and every rejection.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import * as cr1 from '../static/collab/cr1/index.js';
import { seed, throwsCode, rejectsCode } from './helpers.mjs';

const { CHUNK_SIZE } = cr1;
const BLOB = 'b0000000-0000-4000-8000-000000000002';
const KEY = seed('att/test/key');
const PREFIX = seed('att/test/prefix').slice(0, 16);

function content(size) {
  return Uint8Array.from({ length: size }, (_, i) => (i * 7 + 3) % 256);
}

function encrypt(size, pieces = [size]) {
  const data = content(size);
  const enc = new cr1.AttachmentEncryptor(KEY, PREFIX);
  const chunks = [];
  let off = 0;
  for (const n of pieces) {
    chunks.push(...enc.update(data.subarray(off, off + n)));
    off += n;
  }
  chunks.push(...enc.finish());
  return { data, chunks, manifest: enc.manifest(BLOB, { mime: 'image/jpeg', width: 4, height: 3 }) };
}

async function collect(gen) {
  const out = [];
  for await (const part of gen) out.push(part);
  return cr1.concat(...out);
}

describe('round trips', () => {
  for (const size of [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE, 2 * CHUNK_SIZE + 100]) {
    test(`${size} bytes`, async () => {
      const { data, chunks, manifest } = encrypt(size);
      assert.equal(chunks.length, cr1.chunkCount(size));
      assert.equal(manifest.count, chunks.length);
      assert.equal(manifest.size, size);
      chunks.forEach((c, i) => assert.equal(c.length, i < chunks.length - 1 ? CHUNK_SIZE + 16 : size - i * CHUNK_SIZE + 16));
      const blob = cr1.concat(...chunks);
      assert.equal(blob.length, cr1.ciphertextSize(size));
      assert.deepEqual(cr1.decryptBlob(blob, manifest), data);
      // Same bytes whatever the input pieces were.
      const again = encrypt(size, [1, 7, CHUNK_SIZE, 3, size]);
      assert.deepEqual(cr1.concat(...again.chunks), blob);
      assert.deepEqual(again.manifest.root, manifest.root);
      // Streaming decryption over odd pieces, sync iterable and ReadableStream.
      const pieces = [];
      for (let off = 0; off < blob.length; off += 5000) pieces.push(blob.subarray(off, off + 5000));
      assert.deepEqual(await collect(cr1.decryptStream(pieces, manifest)), data);
      const stream = new ReadableStream({
        start(ctrl) {
          for (const p of pieces) ctrl.enqueue(p);
          ctrl.close();
        },
      });
      assert.deepEqual(await collect(cr1.decryptStream(stream, manifest)), data);
      // The server's key-less check.
      const hasher = new cr1.RootHasher();
      for (const p of pieces) hasher.update(p);
      const digest = hasher.verify(manifest.root, cr1.ciphertextSize(size));
      assert.equal(digest.count, chunks.length);
      // The manifest travels as JSON.
      const m2 = cr1.Manifest.fromWire(JSON.parse(JSON.stringify(manifest.toWire())));
      assert.deepEqual(m2.toWire(), manifest.toWire());
    });
  }

  test('random key and prefix by default; one file per encryptor', () => {
    const a = new cr1.AttachmentEncryptor();
    const bEnc = new cr1.AttachmentEncryptor();
    assert.notDeepEqual(a.key, bEnc.key);
    throwsCode(() => a.manifest(BLOB, { mime: 'x' }), 'truncated');
    a.encrypt(content(10));
    throwsCode(() => a.update(content(1)), 'bad_field');
    throwsCode(() => a.finish(), 'bad_field');
    throwsCode(() => new cr1.AttachmentEncryptor(new Uint8Array(31)), 'bad_length');
  });
});

describe('decryption rejections', () => {
  const { chunks, manifest } = encrypt(2 * CHUNK_SIZE + 100);
  const run = (order, m = manifest) => {
    const dec = new cr1.AttachmentDecryptor(m);
    for (const c of order) dec.update(c);
    dec.finalize();
  };

  test('reordered, dropped, altered, foreign chunks: chunk_order', () => {
    throwsCode(() => run([chunks[1], chunks[0], chunks[2]]), 'chunk_order');
    throwsCode(() => run([chunks[0], chunks[2]]), 'chunk_order');
    const altered = new Uint8Array(chunks[1]);
    altered[100] ^= 1;
    throwsCode(() => run([chunks[0], altered, chunks[2]]), 'chunk_order');
    const other = encrypt(2 * CHUNK_SIZE + 100);
    const foreign = new cr1.AttachmentEncryptor(seed('other key'), PREFIX).encrypt(content(10));
    throwsCode(() => run([chunks[0], chunks[1], foreign[0]]), 'chunk_order');
    run(other.chunks); // same key and prefix: identical file, accepted
  });

  test('truncated, extended', async () => {
    throwsCode(() => run([chunks[0], chunks[1]]), 'truncated');
    throwsCode(() => run([]), 'truncated');
    throwsCode(() => run([...chunks, chunks[2]]), 'extended');
    const blob = cr1.concat(...chunks);
    await rejectsCode(collect(cr1.decryptStream([blob.subarray(0, 2 * (CHUNK_SIZE + 16))], manifest)), 'truncated');
    // Appended bytes merge into a short last chunk (chunk_order); after a
    // full-size last chunk they are a chunk of their own (extended).
    await rejectsCode(collect(cr1.decryptStream([blob, new Uint8Array(20)], manifest)), 'chunk_order');
    const even = encrypt(2 * CHUNK_SIZE);
    const evenBlob = cr1.concat(...even.chunks, new Uint8Array(20));
    await rejectsCode(collect(cr1.decryptStream([evenBlob], even.manifest)), 'extended');
    throwsCode(() => cr1.decryptBlob(blob.subarray(0, blob.length - 1), manifest), 'chunk_order');
  });

  test('impossible sizes: bad_length', () => {
    throwsCode(() => run([new Uint8Array(15)]), 'bad_length');
    throwsCode(() => run([new Uint8Array(CHUNK_SIZE + 17)]), 'bad_length');
    // A short chunk without the final bit.
    const short = cr1.secretboxSeal(KEY, cr1.chunkNonce(PREFIX, 0, false), content(10));
    throwsCode(() => run([short]), 'bad_length');
    // An empty final chunk after a full one.
    const full = encrypt(CHUNK_SIZE);
    const emptyLast = cr1.secretboxSeal(KEY, cr1.chunkNonce(PREFIX, 1, true), new Uint8Array(0));
    const notLast = cr1.secretboxSeal(KEY, cr1.chunkNonce(PREFIX, 0, false), content(CHUNK_SIZE));
    throwsCode(() => run([notLast, emptyLast], full.manifest), 'bad_length');
  });

  test('manifest mismatches', () => {
    const w = manifest.toWire();
    const smaller = cr1.Manifest.fromWire({ ...w, size: w.size - 1 });
    throwsCode(() => run(chunks, smaller), 'bad_length');
    const otherRoot = cr1.Manifest.fromWire({ ...w, root: cr1.b64e(new Uint8Array(64)) });
    throwsCode(() => run(chunks, otherRoot), 'bad_hash');
    throwsCode(() => cr1.Manifest.fromWire({ ...w, chunk_size: 1024 }), 'bad_field');
    throwsCode(() => cr1.Manifest.fromWire({ ...w, count: 4 }), 'bad_field');
    throwsCode(() => cr1.Manifest.fromWire({ ...w, key: cr1.b64e(new Uint8Array(16)) }), 'bad_length');
    throwsCode(() => cr1.Manifest.fromWire({ ...w, mime: 3 }), 'bad_field');
  });

  test('server root check', () => {
    const blob = cr1.concat(...chunks);
    throwsCode(() => new cr1.RootHasher().finalize(), 'truncated');
    const h1 = new cr1.RootHasher();
    h1.update(blob);
    throwsCode(() => h1.verify(manifest.root, blob.length + 1), 'bad_length');
    const h2 = new cr1.RootHasher();
    h2.update(blob.subarray(0, blob.length - 1));
    throwsCode(() => h2.verify(manifest.root), 'bad_hash');
    const h3 = new cr1.RootHasher();
    h3.update(blob.subarray(0, 2 * (CHUNK_SIZE + 16) + 15));
    throwsCode(() => h3.finalize(), 'truncated');
  });
});

// Chunked attachment encryption (constant memory on both ends).
// Mirrors collab/crypto/attachment.py.
//
//   nonce_i = prefix(16) || u64(i | 2^63 if i is the last chunk else i)
//   c_i     = secretbox(chunk_i, nonce_i, K_f)   (MAC || ciphertext; nonce
//             not stored, it is derived from the manifest and the index)
//   root    = SHA-512("CR1/att\0" || u64 n || H(c_0) || ... || H(c_{n-1}))
//
// Plaintext chunks are 64 KiB except the last (1..64 KiB; an empty file is
// one empty chunk). The final bit makes truncation and extension detectable;
// the index in the nonce makes reordering detectable.

import * as prim from './primitives.js';
import { CryptoError } from './errors.js';
import { concat, equal, fixed, tag, u64 } from './encoding.js';
import { b64e, getB64, getInt, getStr, getUuid, wireInt } from './wire.js';

export const TAG = tag('CR1/att');
export const CHUNK_SIZE = 65536;
export const CT_CHUNK_SIZE = CHUNK_SIZE + prim.MAC_LEN;
export const LAST_FLAG = 1n << 63n;
export const KEY_LEN = 32;
export const PREFIX_LEN = 16;

export function chunkCount(size) {
  return Math.max(1, Math.ceil(size / CHUNK_SIZE));
}

/** Exact stored size of a blob whose plaintext is `size` bytes. */
export function ciphertextSize(size) {
  return size + prim.MAC_LEN * chunkCount(size);
}

export function chunkNonce(prefix, index, last) {
  const i = BigInt(index);
  if (i < 0n || i >= LAST_FLAG) throw new CryptoError('bad_length', 'chunk index out of range');
  return concat(fixed(prefix, PREFIX_LEN, 'prefix'), u64(last ? i | LAST_FLAG : i));
}

export function rootOf(chunkHashes) {
  return prim.sha512(concat(TAG, u64(chunkHashes.length), ...chunkHashes));
}

/** Travels inside the encrypted message body; never seen by the server. */
export class Manifest {
  constructor({ blobId, key, prefix, chunkSize, count, size, mime, width, height, root }) {
    Object.assign(this, { blobId, key, prefix, chunkSize, count, size, mime, width, height, root });
    Object.freeze(this);
  }

  check() {
    fixed(this.key, KEY_LEN, 'key');
    fixed(this.prefix, PREFIX_LEN, 'prefix');
    fixed(this.root, 64, 'root');
    if (this.chunkSize !== CHUNK_SIZE || this.count !== chunkCount(this.size)) {
      throw new CryptoError('bad_field', 'manifest chunk_size/count do not match size');
    }
  }

  toWire() {
    return {
      blob_id: this.blobId,
      key: b64e(this.key),
      prefix: b64e(this.prefix),
      chunk_size: this.chunkSize,
      count: this.count,
      size: wireInt(this.size),
      mime: this.mime,
      width: this.width,
      height: this.height,
      root: b64e(this.root),
    };
  }

  static fromWire(d) {
    const f = {};
    f.blobId = getUuid(d, 'blob_id');
    f.key = getB64(d, 'key', KEY_LEN);
    f.prefix = getB64(d, 'prefix', PREFIX_LEN);
    f.chunkSize = getInt(d, 'chunk_size');
    f.count = getInt(d, 'count');
    f.size = getInt(d, 'size');
    f.mime = getStr(d, 'mime');
    f.width = getInt(d, 'width', 0xffffffff);
    f.height = getInt(d, 'height', 0xffffffff);
    f.root = getB64(d, 'root', 64);
    const m = new Manifest(f);
    m.check();
    return m;
  }
}

/** Encrypt one file in pieces of any size: update(piece) and finish() return
 * the ciphertext chunks completed so far; then manifest() describes the file.
 * One full chunk is held back until more data (or finish) shows it is not
 * the last. */
export class AttachmentEncryptor {
  constructor(key = null, prefix = null) {
    this.key = key !== null ? fixed(key, KEY_LEN, 'key') : prim.randomBytes(KEY_LEN);
    this.prefix = prefix !== null ? fixed(prefix, PREFIX_LEN, 'prefix') : prim.randomBytes(PREFIX_LEN);
    this._buf = new Uint8Array(CHUNK_SIZE);
    this._len = 0;
    this._hashes = [];
    this._size = 0;
    this._done = false;
  }

  _seal(plain, last) {
    const c = prim.secretboxSeal(this.key, chunkNonce(this.prefix, this._hashes.length, last), plain);
    this._hashes.push(prim.sha512(c));
    this._size += plain.length;
    return c;
  }

  /** Feed plaintext; returns the (possibly empty) list of finished ciphertext chunks. */
  update(data) {
    if (this._done) throw new CryptoError('bad_field', 'an encryptor encrypts one file once');
    const out = [];
    let off = 0;
    while (off < data.length) {
      if (this._len === CHUNK_SIZE) {
        // More data follows, so the held chunk is not the last.
        out.push(this._seal(this._buf.slice(), false));
        this._len = 0;
      }
      const n = Math.min(CHUNK_SIZE - this._len, data.length - off);
      this._buf.set(data.subarray(off, off + n), this._len);
      this._len += n;
      off += n;
    }
    return out;
  }

  /** End of input: returns the final ciphertext chunk (as a one-item list). */
  finish() {
    if (this._done) throw new CryptoError('bad_field', 'an encryptor encrypts one file once');
    const last = this._seal(this._buf.slice(0, this._len), true);
    this._done = true;
    this._buf = null;
    return [last];
  }

  /** Convenience: all ciphertext chunks of one in-memory file. */
  encrypt(data) {
    return [...this.update(data), ...this.finish()];
  }

  manifest(blobId, { mime, width = 0, height = 0 }) {
    if (!this._done) throw new CryptoError('truncated', 'encryption has not finished');
    return new Manifest({
      blobId,
      key: this.key,
      prefix: this.prefix,
      chunkSize: CHUNK_SIZE,
      count: this._hashes.length,
      size: this._size,
      mime,
      width,
      height,
      root: rootOf(this._hashes),
    });
  }
}

/** Key-less root check (server side, or a client checking a download):
 * feed the stored ciphertext in any pieces, then verify(root, ctSize). */
export class RootHasher {
  constructor() {
    this._buf = new Uint8Array(0);
    this._hashes = [];
    this._size = 0;
  }

  update(data) {
    this._buf = concat(this._buf, data);
    this._size += data.length;
    // Keep the final chunk buffered: only the end of input reveals it.
    let off = 0;
    while (this._buf.length - off > CT_CHUNK_SIZE) {
      this._hashes.push(prim.sha512(this._buf.subarray(off, off + CT_CHUNK_SIZE)));
      off += CT_CHUNK_SIZE;
    }
    if (off) this._buf = this._buf.slice(off);
  }

  finalize() {
    if (this._buf.length < prim.MAC_LEN) {
      throw new CryptoError('truncated', 'final chunk is missing or shorter than its MAC');
    }
    const hashes = [...this._hashes, prim.sha512(this._buf)];
    return { root: rootOf(hashes), count: hashes.length, ctSize: this._size };
  }

  verify(expectedRoot, expectedCtSize = null) {
    const digest = this.finalize();
    if (expectedCtSize !== null && digest.ctSize !== expectedCtSize) {
      throw new CryptoError('bad_length', 'blob size differs from the declared size');
    }
    if (!equal(digest.root, expectedRoot)) throw new CryptoError('bad_hash', 'blob root differs from the signed root');
    return digest;
  }
}

/** Feed ciphertext chunks in order; each call returns the plaintext chunk.
 * finalize() must be called: it detects truncation and checks the root.
 * Do not use the output until finalize() has returned. */
export class AttachmentDecryptor {
  constructor(manifest) {
    manifest.check();
    this._m = manifest;
    this._index = 0;
    this._hashes = [];
    this._size = 0;
    this._done = false;
  }

  update(c) {
    if (this._done) throw new CryptoError('extended', 'data after the final chunk');
    if (!(c.length >= prim.MAC_LEN && c.length <= CT_CHUNK_SIZE)) {
      throw new CryptoError('bad_length', 'chunk has an impossible size');
    }
    const plain = this._open(c);
    if (!this._done && plain.length !== CHUNK_SIZE) throw new CryptoError('bad_length', 'short chunk that is not the last');
    if (this._done && plain.length === 0 && this._index > 0) throw new CryptoError('bad_length', 'empty final chunk');
    this._hashes.push(prim.sha512(c));
    this._size += plain.length;
    this._index += 1;
    return plain;
  }

  _open(c) {
    const { key, prefix } = this._m;
    for (const last of [false, true]) {
      let plain;
      try {
        plain = prim.secretboxOpen(key, chunkNonce(prefix, this._index, last), c);
      } catch (err) {
        if (err instanceof CryptoError) continue;
        throw err;
      }
      this._done = last;
      return plain;
    }
    // Authenticates under neither nonce for this position: moved or altered.
    throw new CryptoError('chunk_order', `chunk ${this._index} is not chunk ${this._index} of this file`);
  }

  finalize() {
    if (!this._done) throw new CryptoError('truncated', 'stream ended before the final chunk');
    if (this._index !== this._m.count || this._size !== this._m.size) {
      throw new CryptoError('bad_length', 'chunk count or size differs from the manifest');
    }
    if (!equal(rootOf(this._hashes), this._m.root)) throw new CryptoError('bad_hash', 'root differs from the manifest');
  }
}

/** Regroup pieces of a stored blob (any sizes) into ciphertext chunks. */
class ChunkSplitter {
  constructor() {
    this._buf = new Uint8Array(0);
  }

  push(piece) {
    this._buf = concat(this._buf, piece);
    const out = [];
    let off = 0;
    // Same grouping as Python's fixed-size reads. Full chunks go out at
    // once: whether one is the last is decided by its final bit, not here.
    while (this._buf.length - off >= CT_CHUNK_SIZE) {
      out.push(this._buf.slice(off, off + CT_CHUNK_SIZE));
      off += CT_CHUNK_SIZE;
    }
    if (off) this._buf = this._buf.slice(off);
    return out;
  }

  end() {
    return this._buf.length ? [this._buf] : [];
  }
}

/** Decrypt a whole stored blob held in memory; returns the plaintext. */
export function decryptBlob(blob, manifest) {
  const dec = new AttachmentDecryptor(manifest);
  const parts = [];
  for (let off = 0; off < blob.length; off += CT_CHUNK_SIZE) {
    parts.push(dec.update(blob.subarray(off, off + CT_CHUNK_SIZE)));
  }
  dec.finalize();
  return concat(...parts);
}

/** Yield plaintext chunks from a stored blob arriving as an (async) iterable
 * of Uint8Array pieces of any size, or a ReadableStream; throws at the end
 * on truncation, or as soon as a chunk is out of place. */
export async function* decryptStream(source, manifest) {
  const dec = new AttachmentDecryptor(manifest);
  const split = new ChunkSplitter();
  for await (const piece of iterate(source)) {
    for (const c of split.push(piece)) yield dec.update(c);
  }
  for (const c of split.end()) yield dec.update(c);
  dec.finalize();
}

async function* iterate(source) {
  if (typeof source?.getReader === 'function') {
    const reader = source.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return;
        yield value;
      }
    } finally {
      reader.releaseLock();
    }
  } else {
    yield* source;
  }
}

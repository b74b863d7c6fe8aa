// Canonical binary encoding: fixed-width big-endian ints, u32-prefixed
// variable fields, raw 16-byte UUIDs. Mirrors collab/crypto/encoding.py.
//
// JS representation choices:
// - UUIDs are canonical strings (lower-case, hyphenated, like Python's str(uuid)).
// - Byte fields are Uint8Array (always fresh copies, never views into input).
// - u64 values are Numbers when <= 2^53 - 1 and BigInts above that, so a
//   decoded entry re-encodes to exactly the signed bytes. Use big()/sameInt()
//   when comparing or doing arithmetic on values that may be u64.

import { CryptoError } from './errors.js';

const MAX = { 1: 0xffn, 2: 0xffffn, 4: 0xffffffffn, 8: 0xffffffffffffffffn };

/** A safe-integer Number or a BigInt as a BigInt; anything else is bad_field. */
export function big(value, what = 'integer') {
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number' && Number.isInteger(value)) return BigInt(value);
  throw new CryptoError('bad_field', `${what} must be an integer`);
}

/** Number when exactly representable, else BigInt (see header comment). */
export function norm(value) {
  return value <= BigInt(Number.MAX_SAFE_INTEGER) && value >= 0n ? Number(value) : value;
}

/** Integer equality across Number/BigInt. */
export function sameInt(a, b) {
  return big(a) === big(b);
}

function uint(value, width) {
  const v = big(value, `u${width * 8}`);
  if (v < 0n || v > MAX[width]) {
    throw new CryptoError('bad_field', `${v} does not fit in u${width * 8}`);
  }
  const out = new Uint8Array(width);
  let x = v;
  for (let i = width - 1; i >= 0; i--) {
    out[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  return out;
}

export const u8 = (v) => uint(v, 1);
export const u16 = (v) => uint(v, 2);
export const u32 = (v) => uint(v, 4);
export const u64 = (v) => uint(v, 8);

export function isBytes(x) {
  return x instanceof Uint8Array;
}

/** Fresh Uint8Array concatenation of byte arrays. */
export function concat(...parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Byte equality (not constant time: only for public values and hashes). */
export function equal(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Lexicographic byte comparison, like Python's bytes ordering. */
export function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

export function utf8(text) {
  return new TextEncoder().encode(text);
}

/** Tag bytes: ASCII text then one zero byte, e.g. tag('CR1/msg'). */
export function tag(text) {
  return concat(utf8(text), new Uint8Array([0]));
}

export function toHex(bytes) {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

export function fromHex(text) {
  if (typeof text !== 'string' || text.length % 2 || /[^0-9a-f]/.test(text)) {
    throw new CryptoError('bad_field', 'expected lower-case hex');
  }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** u32 length || bytes. */
export function varBytes(data) {
  return concat(u32(data.length), data);
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function isUuid(value) {
  return typeof value === 'string' && UUID_RE.test(value);
}

/** 16 raw bytes of a canonical UUID string (RFC 4122 byte order). */
export function uuidBytes(value) {
  if (!isUuid(value)) throw new CryptoError('bad_field', 'expected a canonical UUID string');
  return fromHex(value.replace(/-/g, ''));
}

export function uuidFromBytes(bytes) {
  const h = toHex(bytes);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Fresh random UUID (version 4) from the given random-bytes function. */
export function randomUuid(randomBytes) {
  const b = randomBytes(16);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return uuidFromBytes(b);
}

/** Check a fixed-width byte field before packing it. */
export function fixed(data, length, what = 'field') {
  if (!isBytes(data) || data.length !== length) {
    throw new CryptoError('bad_length', `${what} must be ${length} bytes`);
  }
  return new Uint8Array(data);
}

/** u32 count || packed items. */
export function packList(items, pack) {
  const parts = [...items].map(pack);
  return concat(u32(parts.length), ...parts);
}

/** Strict cursor over canonical bytes: short reads and trailing bytes both
 * raise bad_length, so a parse is exact or fails. */
export class Reader {
  constructor(data) {
    this._data = new Uint8Array(data);
    this._pos = 0;
  }

  take(n) {
    if (n < 0 || this._pos + n > this._data.length) {
      throw new CryptoError('bad_length', 'input is too short');
    }
    const out = this._data.slice(this._pos, this._pos + n);
    this._pos += n;
    return out;
  }

  tag(expected) {
    if (!equal(this.take(expected.length), expected)) {
      throw new CryptoError('bad_field', 'unexpected tag');
    }
  }

  _uint(width) {
    let v = 0n;
    for (const b of this.take(width)) v = (v << 8n) | BigInt(b);
    return v;
  }

  u8() { return Number(this._uint(1)); }
  u16() { return Number(this._uint(2)); }
  u32() { return Number(this._uint(4)); }
  u64() { return norm(this._uint(8)); }

  var(maxLen = 2 ** 30) {
    const n = this.u32();
    if (n > maxLen) throw new CryptoError('bad_length', 'variable field too long');
    return this.take(n);
  }

  uuid() {
    return uuidFromBytes(this.take(16));
  }

  list(readItem, maxCount = 1 << 16) {
    const n = this.u32();
    if (n > maxCount) throw new CryptoError('bad_length', 'list too long');
    const out = [];
    for (let i = 0; i < n; i++) out.push(readItem(this));
    return out;
  }

  get remaining() {
    return this._data.length - this._pos;
  }

  done() {
    if (this._pos !== this._data.length) throw new CryptoError('bad_length', 'trailing bytes');
  }
}

// JSON wire wrapper helpers: strict base64 and typed field access.
// Mirrors collab/crypto/wire.py. The wire form is only transport; every
// signature and hash covers canonical bytes re-encoded from parsed fields.

import { CryptoError } from './errors.js';
import { isUuid } from './encoding.js';

// JSON numbers are IEEE doubles: refuse anything not exact there.
export const MAX_SAFE_INT = Number.MAX_SAFE_INTEGER;

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const INDEX = new Map([...ALPHABET].map((c, i) => [c, i]));
const B64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

/** Standard alphabet, with padding. */
export function b64e(data) {
  let out = '';
  let i = 0;
  for (; i + 2 < data.length; i += 3) {
    const n = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];
    out += ALPHABET[n >> 18] + ALPHABET[(n >> 12) & 63] + ALPHABET[(n >> 6) & 63] + ALPHABET[n & 63];
  }
  const rest = data.length - i;
  if (rest === 1) {
    const n = data[i] << 16;
    out += ALPHABET[n >> 18] + ALPHABET[(n >> 12) & 63] + '==';
  } else if (rest === 2) {
    const n = (data[i] << 16) | (data[i + 1] << 8);
    out += ALPHABET[n >> 18] + ALPHABET[(n >> 12) & 63] + ALPHABET[(n >> 6) & 63] + '=';
  }
  return out;
}

/** Strict decode: standard alphabet, padding required, no whitespace,
 * canonical (re-encoding gives the same text), optional exact length. */
export function b64d(text, length = null) {
  if (typeof text !== 'string') throw new CryptoError('bad_base64', 'expected a base64 string');
  if (text.length % 4 !== 0 || !B64_RE.test(text)) {
    throw new CryptoError('bad_base64', 'not padded standard base64');
  }
  const body = text.replace(/=+$/, '');
  const out = new Uint8Array(Math.floor((body.length * 3) / 4));
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (const c of body) {
    acc = (acc << 6) | INDEX.get(c);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
    acc &= (1 << bits) - 1;
  }
  // Rejects a wrong amount of padding and non-zero unused bits alike.
  if (b64e(out) !== text) throw new CryptoError('bad_base64', 'non-canonical base64');
  if (length !== null && length !== undefined && out.length !== length) {
    throw new CryptoError('bad_length', `expected ${length} bytes, got ${out.length}`);
  }
  return out;
}

export function isMapping(d) {
  return typeof d === 'object' && d !== null && !Array.isArray(d) && !(d instanceof Uint8Array);
}

export function get(d, key) {
  if (!isMapping(d) || !Object.prototype.hasOwnProperty.call(d, key)) {
    throw new CryptoError('bad_field', `missing field ${JSON.stringify(key)}`);
  }
  return d[key];
}

export function getInt(d, key, maxValue = MAX_SAFE_INT) {
  const value = get(d, key);
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > maxValue) {
    throw new CryptoError('bad_field', `${JSON.stringify(key)} must be an integer in 0..${maxValue}`);
  }
  return value;
}

export function getStr(d, key) {
  const value = get(d, key);
  if (typeof value !== 'string') throw new CryptoError('bad_field', `${JSON.stringify(key)} must be a string`);
  return value;
}

export function getB64(d, key, length = null) {
  return b64d(get(d, key), length);
}

/** Lower-case hyphenated form only (Python's str(uuid)). */
export function getUuid(d, key) {
  const value = getStr(d, key);
  if (!isUuid(value)) throw new CryptoError('bad_field', `${JSON.stringify(key)} is not a canonical UUID`);
  return value;
}

export function getList(d, key) {
  const value = get(d, key);
  if (!Array.isArray(value)) throw new CryptoError('bad_field', `${JSON.stringify(key)} must be a list`);
  return value;
}

/** A wire integer field for output: u64 values above 2^53 - 1 cannot travel
 * as JSON numbers (Python refuses them on input too), so refuse to emit them. */
export function wireInt(value) {
  if (typeof value === 'bigint') {
    throw new CryptoError('bad_field', 'integer too large for the JSON wire form');
  }
  return value;
}

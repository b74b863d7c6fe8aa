// Message bodies: UTF-8 JSON objects. Senders serialise deterministically
// like Python's encode_body (json.dumps(sort_keys=True, separators=(",", ":"),
// ensure_ascii=False)); receivers accept any JSON object.

import { CryptoError } from './errors.js';

/** Python sorts keys by code point; JS's default sort is by UTF-16 unit. */
function compareCodePoints(a, b) {
  const ia = a[Symbol.iterator]();
  const ib = b[Symbol.iterator]();
  for (;;) {
    const x = ia.next();
    const y = ib.next();
    if (x.done || y.done) return (x.done ? 0 : 1) - (y.done ? 0 : 1);
    const d = x.value.codePointAt(0) - y.value.codePointAt(0);
    if (d) return d;
  }
}

function serialise(value) {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'string':
      // Same escapes as Python with ensure_ascii=False (\" \\ \b \f \n \r \t, \u00xx).
      return JSON.stringify(value);
    case 'number':
      // Integers print alike in both languages; prefer them in bodies
      // (Python prints 1e16 as 1e+16 and 1.0 as 1.0, JS does not).
      if (!Number.isFinite(value)) throw new CryptoError('bad_body', 'NaN and infinities are not JSON');
      return JSON.stringify(value);
    case 'object':
      if (Array.isArray(value)) return `[${value.map(serialise).join(',')}]`;
      return `{${Object.keys(value).sort(compareCodePoints)
        .map((k) => `${JSON.stringify(k)}:${serialise(value[k])}`).join(',')}}`;
    default:
      throw new CryptoError('bad_body', `cannot serialise a ${typeof value} as JSON`);
  }
}

/** Deterministic UTF-8 JSON (sorted keys, no spaces). */
export function encodeBody(body) {
  return new TextEncoder().encode(serialise(body));
}

/** Strict UTF-8 (a BOM is kept, and then refused by JSON.parse, as in Python). */
export function decodeBody(raw) {
  let body;
  try {
    body = JSON.parse(new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(raw));
  } catch {
    throw new CryptoError('bad_body', 'body is not UTF-8 JSON');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new CryptoError('bad_body', 'body must be a JSON object');
  }
  return body;
}

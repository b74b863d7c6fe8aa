// Safety numbers, after Signal's numeric fingerprint: each side is 30 digits
// from an iterated SHA-512 over its UIK and user id; the two halves are
// sorted so both people see the same 60 digits (12 groups of 5).
// Mirrors collab/crypto/safety.py.
//
//   h_0     = "CR1/safety\0" || u16 version || uik_pub(32) || user_id(16)
//   h_{i+1} = SHA-512(h_i || uik_pub)          for i in 0..5199
//   digits  = for j in 0..5: u40_be(h_5200[5j:5j+5]) mod 100000, 5 digits each

import * as prim from './primitives.js';
import { concat, fixed, tag, u16, uuidBytes } from './encoding.js';

export const TAG = tag('CR1/safety');
export const VERSION = 1;
export const ITERATIONS = 5200;

/** One side's 30 digits. */
export function fingerprintDigits(userId, uikPub) {
  const key = fixed(uikPub, 32, 'uik_pub');
  let h = concat(TAG, u16(VERSION), key, uuidBytes(userId));
  // One reusable buffer for h || key (h is 64 bytes after the first round).
  const buf = new Uint8Array(64 + 32);
  buf.set(key, 64);
  h = prim.sha512(concat(h, key));
  for (let i = 1; i < ITERATIONS; i++) {
    buf.set(h, 0);
    h = prim.sha512(buf);
  }
  let out = '';
  for (let j = 0; j < 30; j += 5) {
    let v = 0;
    for (let k = 0; k < 5; k++) v = v * 256 + h[j + k]; // u40 fits exactly in a double
    out += String(v % 100000).padStart(5, '0');
  }
  return out;
}

/** 12 groups of 5 digits, identical for both parties. */
export function safetyNumber(userA, uikA, userB, uikB) {
  const digits = [fingerprintDigits(userA, uikA), fingerprintDigits(userB, uikB)].sort().join('');
  const groups = [];
  for (let i = 0; i < 60; i += 5) groups.push(digits.slice(i, i + 5));
  return groups;
}

// Sealed, signed identity pins: a user's pin book, readable and writable only by
// the holder of the user's identity key, versioned so the server cannot roll it
// back. Mirrors collab/crypto/pins.py.
//
//   K      = SHA-512("CR1C/pins-key\0" || uik_seed)[0:32]
//   blob   = nonce(24) || secretbox(document, nonce, K)
//   signed = "CR1C/pins\0" || user_id(16) || version(u64) || SHA-512(blob)
//   sig    = Ed25519(UIK, signed)

import * as prim from './primitives.js';
import { concat, tag, u64, uuidBytes } from './encoding.js';
import { CryptoError } from './errors.js';

export const KEY_TAG = tag('CR1C/pins-key');
export const SIG_TAG = tag('CR1C/pins');
export const MAX_BLOB = 262144;

export function pinsKey(uikSeed) {
  return prim.sha512(concat(KEY_TAG, uikSeed)).slice(0, 32);
}

export function sealPins(uikSeed, plaintext, nonce = null) {
  const n = nonce ?? prim.randomBytes(prim.SECRETBOX_NONCE_LEN);
  return concat(n, prim.secretboxSeal(pinsKey(uikSeed), n, plaintext));
}

export function openPins(uikSeed, blob) {
  if (blob.length < prim.SECRETBOX_NONCE_LEN + prim.MAC_LEN) throw new CryptoError('bad_length', 'pins blob is too short');
  const n = prim.SECRETBOX_NONCE_LEN;
  return prim.secretboxOpen(pinsKey(uikSeed), blob.subarray(0, n), blob.subarray(n));
}

export function pinsSignedBytes(userId, version, blob) {
  return concat(SIG_TAG, uuidBytes(userId), u64(version), prim.sha512(blob));
}

export function signPins(uikSeed, userId, version, blob) {
  return prim.sign(uikSeed, pinsSignedBytes(userId, version, blob));
}

/** Throws CryptoError (bad_signature, too_large, ...). */
export function verifyPins(uikPub, userId, version, blob, sig) {
  if (blob.length > MAX_BLOB) throw new CryptoError('too_large', 'pins blob is over 256 KiB');
  prim.verify(uikPub, pinsSignedBytes(userId, version, blob), sig);
}

// Thin, strict wrappers over tweetnacl. No crypto is implemented here; we
// add the input checks collab/crypto/primitives.py makes (libsodium's own
// plus a few explicit ones) so both stacks accept exactly the same bytes:
// - Ed25519: small-order and non-canonical public keys, S >= L (tweetnacl
//   accepts it), small-order R (libsodium rejects it, tweetnacl does not).
// - X25519: small-order keys incl. all-zero (tweetnacl boxes to them) and
//   non-canonical keys >= p (tweetnacl silently drops the top bit).
// Error codes and check order are those of the Python module.

import nacl from './nacl.js';
import { CryptoError } from './errors.js';
import { isBytes, toHex } from './encoding.js';

export const P = 2n ** 255n - 19n;
// Order of the Ed25519 base point; a canonical signature has S < L.
export const L = 2n ** 252n + 27742317777372353535851937790883648493n;

export const SIGNATURE_LEN = 64;
export const ED25519_PUBLIC_LEN = 32;
export const X25519_LEN = 32;
export const SEED_LEN = 32;
export const BOX_NONCE_LEN = 24;
export const SECRETBOX_KEY_LEN = 32;
export const SECRETBOX_NONCE_LEN = 24;
export const MAC_LEN = 16;
export const HASH_LEN = 64;

/** 32-byte little-endian encoding of a non-negative BigInt. */
function le32(n) {
  const out = new Uint8Array(32);
  let x = n;
  for (let i = 0; i < 32; i++) {
    out[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  return out;
}

/** Little-endian bytes as a BigInt. */
export function leInt(bytes) {
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]);
  return v;
}

// Edwards y-coordinates of the small-order points (libsodium's blocklist,
// compared with the sign bit cleared); includes the non-canonical p, p+1.
const ED_Y8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022n;
export const ED25519_SMALL_ORDER = new Set(
  [0n, 1n, ED_Y8, P - ED_Y8, P - 1n, P, P + 1n].map((y) => toHex(le32(y))),
);
// Montgomery u-coordinates of the small-order points, top bit cleared.
const X_U8A = 325606250916557431795983626356110631294008115727848805560023387167927233504n;
const X_U8B = 39382357235489614581723060781553021112529911719440698176882885853963445705823n;
export const X25519_SMALL_ORDER = new Set(
  [0n, 1n, X_U8A, X_U8B, P - 1n, P, P + 1n].map((u) => toHex(le32(u))),
);

function clearTopBit(b) {
  const out = new Uint8Array(b);
  out[31] &= 0x7f;
  return out;
}

function need(data, length, message) {
  if (!isBytes(data) || data.length !== length) throw new CryptoError('bad_length', message);
}

export function randomBytes(n) {
  return nacl.randomBytes(n);
}

/** Raw 64-byte SHA-512. */
export function sha512(data) {
  return nacl.hash(data);
}

// --- Ed25519 ---------------------------------------------------------------

/** Reject keys libsodium's verify would refuse but tweetnacl accepts. */
export function checkEd25519Public(pub) {
  need(pub, ED25519_PUBLIC_LEN, 'Ed25519 public key must be 32 bytes');
  const cleared = clearTopBit(pub);
  if (ED25519_SMALL_ORDER.has(toHex(cleared))) {
    throw new CryptoError('low_order_key', 'Ed25519 public key has small order');
  }
  if (leInt(cleared) >= P) throw new CryptoError('bad_key', 'non-canonical Ed25519 public key');
}

export function ed25519Public(seed) {
  need(seed, SEED_LEN, 'Ed25519 seed must be 32 bytes');
  return nacl.sign.keyPair.fromSeed(seed).publicKey;
}

/** Detached Ed25519 signature; the secret is the 32-byte seed. */
export function sign(seed, message) {
  need(seed, SEED_LEN, 'Ed25519 seed must be 32 bytes');
  return nacl.sign.detached(message, nacl.sign.keyPair.fromSeed(seed).secretKey);
}

/** Throw unless `signature` is a canonical, valid signature by `pub`. */
export function verify(pub, message, signature) {
  checkEd25519Public(pub);
  need(signature, SIGNATURE_LEN, 'signature must be 64 bytes');
  // tweetnacl accepts S >= L (malleable); libsodium rejects it.
  if (leInt(signature.subarray(32)) >= L) {
    throw new CryptoError('non_canonical_signature', 'S >= L');
  }
  // libsodium rejects a small-order R; tweetnacl does not.
  if (ED25519_SMALL_ORDER.has(toHex(clearTopBit(signature.subarray(0, 32))))) {
    throw new CryptoError('bad_signature', 'R has small order');
  }
  if (!nacl.sign.detached.verify(message, signature, pub)) {
    throw new CryptoError('bad_signature', 'signature does not verify');
  }
}

// --- X25519 crypto_box -------------------------------------------------------

export function checkX25519Public(pub) {
  need(pub, X25519_LEN, 'X25519 public key must be 32 bytes');
  if (X25519_SMALL_ORDER.has(toHex(clearTopBit(pub)))) {
    throw new CryptoError('low_order_key', 'X25519 public key has small order');
  }
  // As a 256-bit number, top bit included: tweetnacl would ignore that bit.
  if (leInt(pub) >= P) throw new CryptoError('bad_key', 'non-canonical X25519 public key');
}

export function x25519Public(secret) {
  need(secret, X25519_LEN, 'X25519 secret must be 32 bytes');
  return nacl.scalarMult.base(secret);
}

// "expand 32-byte k", as in crypto_box_beforenm.
const SIGMA = new TextEncoder().encode('expand 32-byte k');

/** The crypto_box shared key; like libsodium, refuse an all-zero X25519
 * result (unreachable after the blocklist, kept as a second line). */
function boxKey(secret, peerPublic) {
  checkX25519Public(peerPublic);
  need(secret, X25519_LEN, 'X25519 secret must be 32 bytes');
  const shared = nacl.scalarMult(secret, peerPublic);
  if (shared.every((b) => b === 0)) throw new CryptoError('low_order_key', 'shared secret is zero');
  const k = new Uint8Array(32);
  nacl.lowlevel.crypto_core_hsalsa20(k, new Uint8Array(16), shared, SIGMA);
  return k;
}

/** crypto_box; returns MAC || ciphertext (the nonce is not included). */
export function boxSeal(secret, peerPublic, nonce, plaintext) {
  need(nonce, BOX_NONCE_LEN, 'box nonce must be 24 bytes');
  return nacl.secretbox(plaintext, nonce, boxKey(secret, peerPublic));
}

export function boxOpen(secret, peerPublic, nonce, ciphertext) {
  need(nonce, BOX_NONCE_LEN, 'box nonce must be 24 bytes');
  if (!isBytes(ciphertext) || ciphertext.length < MAC_LEN) {
    throw new CryptoError('bad_length', 'box ciphertext shorter than its MAC');
  }
  const plain = nacl.secretbox.open(ciphertext, nonce, boxKey(secret, peerPublic));
  if (!plain) throw new CryptoError('decrypt_failed', 'box authentication failed');
  return plain;
}

// --- secretbox ---------------------------------------------------------------

function needSecretbox(key, nonce) {
  if (!isBytes(key) || !isBytes(nonce) || key.length !== SECRETBOX_KEY_LEN
      || nonce.length !== SECRETBOX_NONCE_LEN) {
    throw new CryptoError('bad_length', 'secretbox key is 32 and nonce 24 bytes');
  }
}

/** XSalsa20-Poly1305; returns MAC || ciphertext (nonce not included). */
export function secretboxSeal(key, nonce, plaintext) {
  needSecretbox(key, nonce);
  return nacl.secretbox(plaintext, nonce, key);
}

export function secretboxOpen(key, nonce, ciphertext) {
  needSecretbox(key, nonce);
  if (!isBytes(ciphertext) || ciphertext.length < MAC_LEN) {
    throw new CryptoError('bad_length', 'secretbox ciphertext shorter than its MAC');
  }
  const plain = nacl.secretbox.open(ciphertext, nonce, key);
  if (!plain) throw new CryptoError('decrypt_failed', 'secretbox authentication failed');
  return plain;
}

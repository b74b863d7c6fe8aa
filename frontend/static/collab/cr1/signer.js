// Signers for the device signing key (DSK): {kind, publicKey, sign: async (bytes) => sig}.
// Everything the DSK signs in cr1 (sealMessage, sealEntry/buildEntry, signLeave,
// signInvitation, the device proofs) takes a signer, so the key itself can stay
// inside WebCrypto: a browser's DSK is a non-extractable Ed25519 CryptoKey whose
// bytes no script can read. Ed25519 is deterministic, so both signers produce the
// same signature for the same key and message (the shared vectors hold for both).
//
// tweetnacl stays the signer where WebCrypto has no Ed25519, for keys that must be
// derivable from other bytes (the UIK, recovered from the recovery key), and for a
// browser whose stored DSK predates WebCrypto keys (a legacy seed). Browser-only:
// collab/crypto signs with PyNaCl and has no counterpart module.

import * as prim from './primitives.js';
import { CryptoError } from './errors.js';
import { isBytes } from './encoding.js';

const ED25519 = { name: 'Ed25519' };

/** A signer over a 32-byte Ed25519 seed held in memory (tweetnacl). */
export function seedSigner(seed) {
  const publicKey = prim.ed25519Public(seed);
  const own = Uint8Array.from(seed);
  return Object.freeze({ kind: 'tweetnacl', publicKey, sign: async (message) => prim.sign(own, message) });
}

/** A signer over a WebCrypto Ed25519 private key (normally non-extractable). */
export function webCryptoSigner(privateKey, publicKey) {
  if (!isBytes(publicKey) || publicKey.length !== prim.ED25519_PUBLIC_LEN) {
    throw new CryptoError('bad_length', 'Ed25519 public key must be 32 bytes');
  }
  if (privateKey?.type !== 'private' || privateKey.algorithm?.name !== 'Ed25519') {
    throw new CryptoError('bad_key', 'not a WebCrypto Ed25519 private key');
  }
  const pub = Uint8Array.from(publicKey);
  return Object.freeze({
    kind: 'webcrypto',
    publicKey: pub,
    key: privateKey,
    sign: async (message) => new Uint8Array(await crypto.subtle.sign(ED25519, privateKey, message)),
  });
}

/** The signer itself, or a seed signer for raw seed bytes (tests, legacy records). */
export function asSigner(signerOrSeed) {
  if (isBytes(signerOrSeed)) return seedSigner(signerOrSeed);
  if (signerOrSeed && typeof signerOrSeed.sign === 'function' && isBytes(signerOrSeed.publicKey)) {
    return signerOrSeed;
  }
  throw new CryptoError('bad_key', 'a DSK signer (or a 32-byte seed) is required');
}

/** Sign with `signer` and check the result is exactly 64 bytes. */
export async function signWith(signerOrSeed, message) {
  const sig = await asSigner(signerOrSeed).sign(message);
  if (!isBytes(sig) || sig.length !== prim.SIGNATURE_LEN) {
    throw new CryptoError('bad_length', 'signer returned a signature that is not 64 bytes');
  }
  return sig;
}

let support = null;

/** Whether this runtime's WebCrypto makes and uses Ed25519 keys (probed once). */
export function webCryptoEd25519() {
  if (!support) {
    support = (async () => {
      try {
        const subtle = globalThis.crypto?.subtle;
        if (!subtle) return false;
        const pair = await subtle.generateKey(ED25519, false, ['sign', 'verify']);
        const msg = new Uint8Array([1, 2, 3]);
        const sig = new Uint8Array(await subtle.sign(ED25519, pair.privateKey, msg));
        const pub = new Uint8Array(await subtle.exportKey('raw', pair.publicKey));
        prim.verify(pub, msg, sig); // the same signature tweetnacl accepts
        return true;
      } catch {
        return false;
      }
    })();
  }
  return support;
}

/**
 * A fresh DSK. With WebCrypto Ed25519: {signer, privateKey (CryptoKey, extractable
 * false), seed: null}; without it: {signer, privateKey: null, seed} (tweetnacl).
 */
export async function generateDeviceSigner({ webCrypto = null } = {}) {
  const use = webCrypto ?? (await webCryptoEd25519());
  if (use) {
    const pair = await crypto.subtle.generateKey(ED25519, false, ['sign']);
    const publicKey = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
    prim.checkEd25519Public(publicKey);
    return { signer: webCryptoSigner(pair.privateKey, publicKey), privateKey: pair.privateKey, seed: null };
  }
  const seed = prim.randomBytes(prim.SEED_LEN);
  return { signer: seedSigner(seed), privateKey: null, seed };
}

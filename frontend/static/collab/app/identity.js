// Identity and device keys, and the identity backup under a recovery key.
// Same formats as the Python client (collab/client/keys.py), so a recovery key
// made in the browser works in `collab-client recover` and the other way round:
//   backup = nonce(24) || secretbox("CR1C/uik-backup\0" || user_id(16) || uik_seed(32))
//   recovery key: 32 random bytes, shown as base32 in groups of four.

import {
  CryptoError, concat, ed25519Public, equal, generateDeviceSigner, makeDeviceCert, randomBytes,
  randomUuid, secretboxOpen, secretboxSeal, uuidBytes, x25519Public,
} from '../cr1/index.js';

const BACKUP_TAG = new TextEncoder().encode('CR1C/uik-backup\0');
const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
export const RECOVERY_KEY_LEN = 32;

export function base32Encode(bytes) {
  let out = '';
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += B32[(acc >> bits) & 31];
    }
    acc &= (1 << bits) - 1;
  }
  if (bits > 0) out += B32[(acc << (5 - bits)) & 31];
  return out;
}

export function base32Decode(text) {
  const out = [];
  let acc = 0;
  let bits = 0;
  for (const c of text) {
    const v = B32.indexOf(c);
    if (v < 0) throw new Error('not base32');
    acc = (acc << 5) | v;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((acc >> bits) & 0xff);
    }
    acc &= (1 << bits) - 1;
  }
  return new Uint8Array(out);
}

export function newRecoveryKey() {
  return randomBytes(RECOVERY_KEY_LEN);
}

/** "ABCD-EFGH-…" (13 groups of four). */
export function formatRecoveryKey(key) {
  const text = base32Encode(key);
  return text.match(/.{1,4}/g).join('-');
}

export function recoveryGroups(key) {
  return formatRecoveryKey(key).split('-');
}

export class RecoveryKeyError extends Error {
  constructor(message) {
    super(message);
    this.name = 'RecoveryKeyError';
  }
}

export function parseRecoveryKey(text) {
  const cleaned = String(text).toUpperCase().replace(/[^A-Z0-9]/g, '');
  let key;
  try {
    key = base32Decode(cleaned);
  } catch {
    throw new RecoveryKeyError('That is not a recovery key (letters A–Z and digits 2–7 only).');
  }
  if (key.length !== RECOVERY_KEY_LEN) throw new RecoveryKeyError('That recovery key is too short or too long.');
  return key;
}

export function sealIdentityBackup(userId, uikSeed, recoveryKey) {
  const nonce = randomBytes(24);
  return concat(nonce, secretboxSeal(recoveryKey, nonce, concat(BACKUP_TAG, uuidBytes(userId), uikSeed)));
}

export function openIdentityBackup(blob, recoveryKey, userId) {
  if (blob.length < 24 + 16) throw new CryptoError('bad_length', 'identity backup is too short');
  let plain;
  try {
    plain = secretboxOpen(recoveryKey, blob.subarray(0, 24), blob.subarray(24));
  } catch {
    throw new RecoveryKeyError('This recovery key does not open your identity backup.');
  }
  if (plain.length !== BACKUP_TAG.length + 16 + 32 || !equal(plain.subarray(0, BACKUP_TAG.length), BACKUP_TAG)) {
    throw new CryptoError('bad_length', 'identity backup has an unknown layout');
  }
  if (!equal(plain.subarray(BACKUP_TAG.length, BACKUP_TAG.length + 16), uuidBytes(userId))) {
    throw new CryptoError('wrong_case', 'identity backup belongs to another user');
  }
  return plain.slice(plain.length - 32);
}

/** Fresh device keys for `userId`, certified by the identity seed. The DSK is a
 * non-extractable WebCrypto Ed25519 key (`dskKey`); only where WebCrypto has no Ed25519
 * is it a tweetnacl seed (`dskSeed`). The identity seed stays a seed: it must be
 * derivable again from the recovery key's backup. */
export async function newDevice(userId, uikSeed, name, { webCrypto = null } = {}) {
  const deviceId = randomUuid(randomBytes);
  const dsk = await generateDeviceSigner({ webCrypto });
  const dxkSecret = randomBytes(32);
  const cert = makeDeviceCert(
    uikSeed, userId, deviceId, dsk.signer.publicKey, x25519Public(dxkSecret), Date.now() - 60_000,
  );
  return {
    userId, deviceId, signer: dsk.signer, dskKey: dsk.privateKey, dskSeed: dsk.seed,
    dxkSecret, uikSeed, cert: cert.toWire(), name,
  };
}

export function uikPublic(uikSeed) {
  return ed25519Public(uikSeed);
}

/** A readable default device name, e.g. "Chrome on Linux". */
export function defaultDeviceName() {
  const ua = navigator.userAgent;
  const browser = /Firefox\//.test(ua) ? 'Firefox' : /Edg\//.test(ua) ? 'Edge'
    : /Chrom(e|ium)\//.test(ua) ? 'Chrome' : /Safari\//.test(ua) ? 'Safari' : 'Browser';
  const os = /Windows/.test(ua) ? 'Windows' : /Mac OS X/.test(ua) ? 'macOS' : /Android/.test(ua) ? 'Android'
    : /iPhone|iPad/.test(ua) ? 'iOS' : /Linux/.test(ua) ? 'Linux' : 'unknown system';
  return `${browser} on ${os}`;
}

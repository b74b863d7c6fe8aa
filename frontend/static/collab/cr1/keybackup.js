// Authenticated backup of epoch keys, so every device of a user reads the whole
// case. Mirrors collab/crypto/keybackup.py.
//
//   K_b   = SHA-512("CR1C/key-backup-key\0" || uik_seed)[0:32]
//   plain = "CR1C/key-backup\0" || case_id(16) || epoch(u64) || K_e(32)
//   item  = nonce(24) || secretbox(plain, nonce, K_b)
// The opener also checks K_e against the verified entry's key_commit.

import * as prim from './primitives.js';
import { concat, equal, fixed, tag, u64, uuidBytes } from './encoding.js';
import { CryptoError } from './errors.js';

export const KEY_TAG = tag('CR1C/key-backup-key');
export const ITEM_TAG = tag('CR1C/key-backup');
export const PLAIN_LEN = ITEM_TAG.length + 16 + 8 + 32;
export const ITEM_LEN = prim.SECRETBOX_NONCE_LEN + prim.MAC_LEN + PLAIN_LEN;

export function backupKey(uikSeed) {
  return prim.sha512(concat(KEY_TAG, uikSeed)).slice(0, 32);
}

export function itemPlaintext(caseId, epoch, epochKey) {
  return concat(ITEM_TAG, uuidBytes(caseId), u64(epoch), fixed(epochKey, 32, 'epoch key'));
}

export function sealBackupItem(key, caseId, epoch, epochKey, nonce = null) {
  const n = nonce ?? prim.randomBytes(prim.SECRETBOX_NONCE_LEN);
  return concat(n, prim.secretboxSeal(key, n, itemPlaintext(caseId, epoch, epochKey)));
}

/** The epoch key; decrypt_failed for an item not made with this key, bad_wrap for
 * one made for another case or epoch (a server swapping items). */
export function openBackupItem(key, item, caseId, epoch) {
  if (item.length !== ITEM_LEN) throw new CryptoError('bad_length', 'key backup item has the wrong length');
  const n = prim.SECRETBOX_NONCE_LEN;
  const plain = prim.secretboxOpen(key, item.subarray(0, n), item.subarray(n));
  const expected = itemPlaintext(caseId, epoch, new Uint8Array(32));
  if (!equal(plain.subarray(0, plain.length - 32), expected.subarray(0, expected.length - 32))) {
    throw new CryptoError('bad_wrap', 'key backup item is for another case or epoch');
  }
  return plain.slice(plain.length - 32);
}

// Membership log: one signed hash chain per case. Every entry carries the
// full resulting roster and a fresh epoch key wrapped to every roster device.
// Mirrors collab/crypto/log.py (same checks, same order, same codes).
//
//   signed = "CR1/log\0" || case_id || epoch u64 || prev_hash(64)
//            || author_user_id || author_device_id || created_ms u64
//            || action u8 || var(action_body) || roster || key_commit(64)
//            || epk(32) || u32 n || (device_id || var(box))*n
//   entry  = signed || signature(64)      entry_hash = SHA-512(entry)

import * as prim from './primitives.js';
import { signWith } from './signer.js';
import { CryptoError } from './errors.js';
import {
  Action, HISTORY_TAG, HistoryWrap, ShareHistoryBody, actionFor, applyAction, authorize,
  parseAction, parseBody,
} from './actions.js';
import {
  Reader, big, compareBytes, concat, equal, fixed, norm, packList, sameInt, tag, u64, u8,
  uuidBytes, varBytes,
} from './encoding.js';
import { Roster } from './roster.js';
import { b64e, get, getB64, getInt, getList, getUuid, wireInt } from './wire.js';

export const TAG = tag('CR1/log');
export const WRAP_TAG = tag('CR1/wrap');
export const KEYCOMMIT_TAG = tag('CR1/keycommit');
export const NONCE_TAG = tag('CR1/nonce');
export const ZERO_HASH = new Uint8Array(64);
export const EPOCH_KEY_LEN = 32;
export const WRAP_PLAIN_LEN = WRAP_TAG.length + 16 + 8 + 64 + 16 + EPOCH_KEY_LEN;
export const WRAP_CT_LEN = prim.MAC_LEN + WRAP_PLAIN_LEN;

export class Wrap {
  constructor(deviceId, ciphertext) {
    this.deviceId = deviceId;
    this.ciphertext = ciphertext; // crypto_box MAC || ciphertext, nonce derived (wrapNonce)
  }
}

const FIELDS = [
  'caseId', 'epoch', 'prevHash', 'authorUserId', 'authorDeviceId', 'createdMs', 'action',
  'actionBody', 'roster', 'keyCommit', 'epk', 'wraps', 'signature',
];

export class LogEntry {
  /** Takes an object with the fields of FIELDS (camelCase of the Python names). */
  constructor(fields) {
    for (const f of FIELDS) this[f] = fields[f];
    this.wraps = Object.freeze([...this.wraps]);
    Object.freeze(this);
  }

  /** A copy with some fields changed (Python's dataclasses.replace). */
  replace(changes) {
    return new LogEntry({ ...this, ...changes });
  }

  signedBytes() {
    return concat(
      TAG,
      uuidBytes(this.caseId),
      u64(this.epoch),
      fixed(this.prevHash, 64, 'prev_hash'),
      uuidBytes(this.authorUserId),
      uuidBytes(this.authorDeviceId),
      u64(this.createdMs),
      u8(this.action),
      varBytes(this.actionBody),
      this.roster.encode(),
      fixed(this.keyCommit, 64, 'key_commit'),
      fixed(this.epk, 32, 'epk'),
      packList(this.wraps, (w) => concat(uuidBytes(w.deviceId), varBytes(w.ciphertext))),
    );
  }

  encode() {
    return concat(this.signedBytes(), fixed(this.signature, 64, 'signature'));
  }

  entryHash() {
    return prim.sha512(this.encode());
  }

  body() {
    return parseBody(this.action, this.actionBody);
  }

  equals(other) {
    return equal(this.encode(), other.encode());
  }

  static decode(data) {
    const r = new Reader(data);
    r.tag(TAG);
    // Field order matters: each read consumes the next bytes.
    const f = {};
    f.caseId = r.uuid();
    f.epoch = r.u64();
    f.prevHash = r.take(64);
    f.authorUserId = r.uuid();
    f.authorDeviceId = r.uuid();
    f.createdMs = r.u64();
    f.action = parseAction(r.u8());
    f.actionBody = r.var(1 << 20);
    f.roster = Roster.read(r);
    f.keyCommit = r.take(64);
    f.epk = r.take(32);
    f.wraps = r.list((rr) => {
      const deviceId = rr.uuid();
      return new Wrap(deviceId, rr.var(1024));
    }, 8192);
    f.signature = r.take(64);
    r.done();
    return new LogEntry(f);
  }

  toWire() {
    return {
      case_id: this.caseId,
      epoch: wireInt(this.epoch),
      prev_hash: b64e(this.prevHash),
      author_user_id: this.authorUserId,
      author_device_id: this.authorDeviceId,
      created_ms: wireInt(this.createdMs),
      action: this.action,
      action_body: b64e(this.actionBody),
      roster: this.roster.toWire(),
      key_commit: b64e(this.keyCommit),
      epk: b64e(this.epk),
      wraps: this.wraps.map((w) => ({ device_id: w.deviceId, ct: b64e(w.ciphertext) })),
      signature: b64e(this.signature),
    };
  }

  static fromWire(d) {
    const f = {};
    f.caseId = getUuid(d, 'case_id');
    f.epoch = getInt(d, 'epoch');
    f.prevHash = getB64(d, 'prev_hash', 64);
    f.authorUserId = getUuid(d, 'author_user_id');
    f.authorDeviceId = getUuid(d, 'author_device_id');
    f.createdMs = getInt(d, 'created_ms');
    f.action = parseAction(getInt(d, 'action', 255));
    f.actionBody = getB64(d, 'action_body');
    f.roster = Roster.fromWire(get(d, 'roster'));
    f.keyCommit = getB64(d, 'key_commit', 64);
    f.epk = getB64(d, 'epk', 32);
    f.wraps = getList(d, 'wraps').map((w) => new Wrap(getUuid(w, 'device_id'), getB64(w, 'ct')));
    f.signature = getB64(d, 'signature', 64);
    return new LogEntry(f);
  }
}

export function keyCommit(epochKey, caseId, epoch) {
  return prim.sha512(concat(KEYCOMMIT_TAG, fixed(epochKey, 32, 'epoch key'), uuidBytes(caseId), u64(epoch)));
}

/** Derived, not sent: unique per (ephemeral key, device, key epoch). */
export function wrapNonce(epk, deviceId, epoch) {
  return prim.sha512(concat(NONCE_TAG, fixed(epk, 32, 'epk'), uuidBytes(deviceId), u64(epoch))).slice(0, 24);
}

export function wrapPlaintext(caseId, epoch, prevHash, deviceId, epochKey) {
  return concat(WRAP_TAG, uuidBytes(caseId), u64(epoch), fixed(prevHash, 64), uuidBytes(deviceId), epochKey);
}

export function historyPlaintext(caseId, epoch, deviceId, epochKey) {
  return concat(HISTORY_TAG, uuidBytes(caseId), u64(epoch), uuidBytes(deviceId), fixed(epochKey, 32));
}

/** Low level: wrap, commit and sign exactly the given fields, no policy.
 * Use buildEntry unless you are reproducing test vectors. */
export async function sealEntry({
  signer, caseId, epoch, prevHash, authorUserId, authorDeviceId, createdMs, action,
  actionBody, roster, epochKey, epkSecret,
}) {
  const epk = prim.x25519Public(epkSecret);
  const wraps = roster.devices.map((d) => new Wrap(
    d.deviceId,
    prim.boxSeal(epkSecret, d.dxkPub, wrapNonce(epk, d.deviceId, epoch),
      wrapPlaintext(caseId, epoch, prevHash, d.deviceId, epochKey)),
  ));
  const unsigned = new LogEntry({
    caseId, epoch, prevHash, authorUserId, authorDeviceId, createdMs, action, actionBody, roster,
    keyCommit: keyCommit(epochKey, caseId, epoch), epk, wraps, signature: new Uint8Array(64),
  });
  return unsigned.replace({ signature: await signWith(signer, unsigned.signedBytes()) });
}

/** Author the next entry after `prev` (null: genesis, needs caseId).
 * Returns {entry, epochKey}. The result is verified before it is returned,
 * so a client can never publish an entry other clients would refuse. */
export async function buildEntry(prev, body, {
  signer, authorUserId, authorDeviceId, createdMs, caseId = null, epochKey = null, epkSecret = null,
}) {
  let epoch;
  let prevHash;
  let prevRoster;
  if (prev === null) {
    if (caseId === null) throw new CryptoError('bad_field', 'genesis needs a case_id');
    [epoch, prevHash, prevRoster] = [0, ZERO_HASH, null];
  } else {
    [caseId, epoch, prevHash, prevRoster] = [prev.caseId, norm(big(prev.epoch) + 1n), prev.entryHash(), prev.roster];
  }
  const action = actionFor(body);
  const roster = applyAction(prevRoster, { epoch, authorUserId, body });
  const k = epochKey ?? prim.randomBytes(EPOCH_KEY_LEN);
  const entry = await sealEntry({
    signer, caseId, epoch, prevHash, authorUserId, authorDeviceId, createdMs, action,
    actionBody: body.encode(), roster, epochKey: k, epkSecret: epkSecret ?? prim.randomBytes(32),
  });
  verifyEntry(prev, entry);
  return { entry, epochKey: k };
}

/** Every acceptance check of the protocol, in a fixed order (so Python and
 * JS report the same code for the same bytes). Server and clients both run it. */
export function verifyEntry(prev, entry) {
  // 1. Position in the chain (compare-and-swap on the head).
  if (prev === null) {
    if (!sameInt(entry.epoch, 0)) throw new CryptoError('wrong_epoch', 'genesis must be epoch 0');
    if (!equal(entry.prevHash, ZERO_HASH)) throw new CryptoError('stale_head', 'genesis prev_hash must be zero');
    if (entry.action !== Action.CREATE) throw new CryptoError('bad_action', 'the genesis entry must be create');
  } else {
    if (entry.caseId !== prev.caseId) throw new CryptoError('wrong_case', 'entry belongs to another case');
    if (big(entry.epoch) !== big(prev.epoch) + 1n) {
      throw new CryptoError('wrong_epoch', `expected epoch ${big(prev.epoch) + 1n}, got ${entry.epoch}`);
    }
    if (!equal(entry.prevHash, prev.entryHash())) {
      throw new CryptoError('stale_head', 'prev_hash is not the hash of the head');
    }
  }
  // 2. The author's device must be in the previous roster (genesis: its own), except
  //    in enrol_device, whose author is the new device of a user in the previous roster.
  const signerRoster = prev !== null ? prev.roster : entry.roster;
  let device = signerRoster.device(entry.authorDeviceId);
  if (prev !== null && entry.action === Action.ENROL_DEVICE) {
    const enrolled = entry.body();
    const fresh = !device && enrolled.device.deviceId === entry.authorDeviceId;
    const known = Boolean(prev.roster.user(entry.authorUserId));
    device = fresh && known ? enrolled.device : null;
  }
  if (!device || device.userId !== entry.authorUserId) {
    throw new CryptoError('unauthorized_author', 'author device is not in the previous roster');
  }
  // 3. Signature by that device's DSK over the signed bytes.
  prim.verify(device.dskPub, entry.signedBytes(), entry.signature);
  // 4. Authorisation of the action against the previous roster.
  const body = entry.body();
  const prevRoster = prev !== null ? prev.roster : null;
  authorize(prevRoster, {
    caseId: entry.caseId,
    prevEpoch: prev !== null ? prev.epoch : 0,
    authorUserId: entry.authorUserId,
    action: entry.action,
    body,
    prevHash: entry.prevHash,
  });
  // 5. The new roster is well formed, every device certificate chains to its
  //    UIK, and it is exactly the previous roster plus the action.
  entry.roster.validate();
  prim.checkX25519Public(entry.epk);
  const expected = applyAction(prevRoster, { epoch: entry.epoch, authorUserId: entry.authorUserId, body });
  if (!expected.equals(entry.roster)) {
    throw new CryptoError('roster_mismatch', 'roster is not the previous roster plus the action');
  }
  // 6. A removed member never authors the next key.
  const after = entry.roster.device(entry.authorDeviceId);
  if (!after || after.userId !== entry.authorUserId) {
    throw new CryptoError('unauthorized_author', 'author is not in the resulting roster');
  }
  // 7. Exactly one wrap per roster device, in roster order.
  const devs = entry.roster.devices;
  if (entry.wraps.length !== devs.length || entry.wraps.some((w, i) => w.deviceId !== devs[i].deviceId)) {
    throw new CryptoError('wraps_mismatch', 'wraps do not match the roster devices');
  }
  if (entry.wraps.some((w) => w.ciphertext.length !== WRAP_CT_LEN)) {
    throw new CryptoError('wraps_mismatch', 'wrap has the wrong length');
  }
}

/** Recover this entry's epoch key as `deviceId`; checks binding and commit. */
export function openWrap(entry, deviceId, dxkSecret) {
  const wrap = entry.wraps.find((w) => w.deviceId === deviceId);
  if (!wrap) throw new CryptoError('wraps_mismatch', 'no wrap for this device');
  const plain = prim.boxOpen(dxkSecret, entry.epk, wrapNonce(entry.epk, deviceId, entry.epoch), wrap.ciphertext);
  if (plain.length !== WRAP_PLAIN_LEN) throw new CryptoError('bad_wrap', 'wrap plaintext has the wrong length');
  const k = plain.slice(plain.length - EPOCH_KEY_LEN);
  if (!equal(plain, wrapPlaintext(entry.caseId, entry.epoch, entry.prevHash, deviceId, k))) {
    throw new CryptoError('bad_wrap', 'wrap is bound to another case, epoch, head or device');
  }
  if (!equal(keyCommit(k, entry.caseId, entry.epoch), entry.keyCommit)) {
    throw new CryptoError('key_commit_mismatch', 'wrapped key does not match key_commit');
  }
  return k;
}

/** Re-wrap earlier epoch keys: items are [recipient DeviceCert, epoch, key]. */
export function makeHistoryBody(caseId, items, { hepkSecret = null } = {}) {
  const secret = hepkSecret ?? prim.randomBytes(32);
  const hepk = prim.x25519Public(secret);
  const wraps = items.map(([d, epoch, key]) => {
    const nonce = wrapNonce(hepk, d.deviceId, epoch);
    const plain = historyPlaintext(caseId, epoch, d.deviceId, key);
    return new HistoryWrap(d.deviceId, epoch, prim.boxSeal(secret, d.dxkPub, nonce, plain));
  });
  wraps.sort((a, b) => compareBytes(a.key(), b.key()));
  return new ShareHistoryBody(hepk, wraps);
}

/** Look up a (verified) entry by epoch in a Map (epoch -> entry), an array
 * of entries, or any iterable of entries. */
function chainLookup(chain) {
  const byEpoch = new Map();
  const values = chain instanceof Map ? chain.values() : chain;
  for (const e of values) byEpoch.set(big(e.epoch), e);
  return (epoch) => byEpoch.get(big(epoch)) ?? null;
}

/** Earlier epoch keys shared with `deviceId` (Map epoch -> key), each
 * checked against the key_commit of its own (already verified) entry in `chain`. */
export function openHistory(entry, deviceId, dxkSecret, chain) {
  const body = entry.body();
  if (!(body instanceof ShareHistoryBody)) throw new CryptoError('bad_action', 'not a share_history entry');
  const lookup = chainLookup(chain);
  const keys = new Map();
  for (const w of body.items) {
    if (w.deviceId !== deviceId) continue;
    const plain = prim.boxOpen(dxkSecret, body.hepk, wrapNonce(body.hepk, deviceId, w.epoch), w.ciphertext);
    const k = plain.slice(Math.max(0, plain.length - EPOCH_KEY_LEN));
    if (!equal(plain, historyPlaintext(entry.caseId, w.epoch, deviceId, k))) {
      throw new CryptoError('bad_wrap', 'history wrap is bound to something else');
    }
    const old = lookup(w.epoch);
    if (!old || !equal(keyCommit(k, entry.caseId, w.epoch), old.keyCommit)) {
      throw new CryptoError('key_commit_mismatch', `history key for epoch ${w.epoch} does not match`);
    }
    keys.set(w.epoch, k);
  }
  return keys;
}

/** Two different entries for one epoch of one case: the server forked the log. */
export function checkFork(a, b) {
  if (a.caseId === b.caseId && sameInt(a.epoch, b.epoch) && !equal(a.entryHash(), b.entryHash())) {
    throw new CryptoError('fork', `two different entries for epoch ${a.epoch}`);
  }
}

/** Verify a whole chain (from genesis, or after an already-verified
 * `trustedHead`). Duplicates of one entry are tolerated; two different
 * entries for one epoch throw fork. Returns the chain in epoch order. */
export function verifyChain(entries, { trustedHead = null } = {}) {
  const byEpoch = new Map(); // BigInt epoch -> entry
  for (const e of entries) {
    const seen = byEpoch.get(big(e.epoch));
    if (seen) checkFork(seen, e);
    if (trustedHead !== null && sameInt(e.epoch, trustedHead.epoch)) checkFork(trustedHead, e);
    if (!seen) byEpoch.set(big(e.epoch), e);
  }
  let prev = trustedHead;
  const chain = [];
  const start = trustedHead === null ? 0n : big(trustedHead.epoch) + 1n;
  const epochs = [...byEpoch.keys()].filter((k) => k >= start).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  for (const epoch of epochs) {
    const entry = byEpoch.get(epoch);
    verifyEntry(prev, entry); // throws wrong_epoch on a gap
    chain.push(entry);
    prev = entry;
  }
  return chain;
}

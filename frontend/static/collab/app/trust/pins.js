// Identity pins: which identity key (UIK) this user has seen, accepted or
// verified for every other user. Pure policy, no I/O; the same rules as
// collab/client/pins.py, both tested on tests/policy/trust_scenarios.json.
//
// Record per user (the JSON form is the pins document of docs and cr1/pins.js):
//   {uik: b64, state: 'pinned'|'verified', updated_ms, previous: [b64],
//    changed: null | {uik: b64, seen_ms, cases: [sorted case ids]}}
// state(user, uik): 'new' (no record) | record.state (same key) | 'changed'.

import { CryptoError, b64d, b64e } from '../../cr1/index.js';

export const PINS_FORMAT = 'collab-pins';
export const STATES = Object.freeze(['new', 'pinned', 'verified', 'changed']);
const MAX_PREVIOUS = 16;
const MAX_CASES = 256;

/** A client policy refusal (not a cryptographic failure): code 'identity_changed'. */
export class TrustError extends Error {
  constructor(code, message, changes = []) {
    super(message ? `${code}: ${message}` : code);
    this.name = 'TrustError';
    this.code = code;
    this.detail = message;
    this.changes = changes;
  }
}

const keyText = (uik) => (typeof uik === 'string' ? b64e(b64d(uik, 32)) : b64e(checkKey(uik)));

function checkKey(uik) {
  if (!(uik instanceof Uint8Array) || uik.length !== 32) throw new TypeError('a UIK is 32 bytes');
  return uik;
}

function cloneRecord(r) {
  return {
    uik: r.uik,
    state: r.state,
    updated_ms: r.updated_ms,
    previous: [...r.previous],
    changed: r.changed ? { uik: r.changed.uik, seen_ms: r.changed.seen_ms, cases: [...r.changed.cases] } : null,
  };
}

function sameRecord(a, b) {
  return JSON.stringify(cloneRecord(a)) === JSON.stringify(cloneRecord(b));
}

/** Check one record of a pins document (from storage or another device). */
export function parseRecord(raw) {
  if (!raw || typeof raw !== 'object') throw new CryptoError('bad_field', 'pin record is not an object');
  const uik = keyText(raw.uik);
  if (raw.state !== 'pinned' && raw.state !== 'verified') throw new CryptoError('bad_field', 'pin state');
  if (!Number.isSafeInteger(raw.updated_ms) || raw.updated_ms < 0) throw new CryptoError('bad_field', 'pin updated_ms');
  if (!Array.isArray(raw.previous)) throw new CryptoError('bad_field', 'pin previous');
  const previous = raw.previous.slice(-MAX_PREVIOUS).map(keyText);
  let changed = null;
  if (raw.changed !== null && raw.changed !== undefined) {
    const c = raw.changed;
    if (!Number.isSafeInteger(c.seen_ms) || !Array.isArray(c.cases)) throw new CryptoError('bad_field', 'pin changed');
    if (c.cases.some((x) => typeof x !== 'string')) throw new CryptoError('bad_field', 'pin changed cases');
    changed = { uik: keyText(c.uik), seen_ms: c.seen_ms, cases: [...new Set(c.cases)].sort().slice(0, MAX_CASES) };
  }
  return { uik, state: raw.state, updated_ms: raw.updated_ms, previous, changed };
}

/** Per user: newer updated_ms wins; a tie: verified beats pinned, else local.
 * A pending change survives when it names a key other than the merged one. */
export function mergeRecords(local, remote) {
  if (!local) return cloneRecord(remote);
  if (!remote) return cloneRecord(local);
  let winner;
  if (remote.updated_ms > local.updated_ms) winner = remote;
  else if (remote.updated_ms < local.updated_ms) winner = local;
  else winner = remote.state === 'verified' && local.state !== 'verified' ? remote : local;
  const merged = cloneRecord(winner);
  if (local.changed && local.changed.uik !== merged.uik) merged.changed = cloneRecord(local).changed;
  else if (remote.changed && remote.changed.uik !== merged.uik) merged.changed = cloneRecord(remote).changed;
  else merged.changed = null;
  return merged;
}

/** Pairs [user id, uik bytes] of a verified Roster (cr1/roster.js). */
export function rosterPairs(roster) {
  return roster.users.map((u) => [u.userId, u.uikPub]);
}

export class PinBook {
  constructor(records = {}) {
    this.records = new Map();
    for (const [user, raw] of Object.entries(records)) this.records.set(user, parseRecord(raw));
  }

  static fromDocument(doc) {
    if (!doc || doc.format !== PINS_FORMAT || typeof doc.pins !== 'object' || doc.pins === null) {
      throw new CryptoError('bad_field', 'not a pins document');
    }
    return new PinBook(doc.pins);
  }

  toDocument() {
    return { format: PINS_FORMAT, pins: this.toJSON() };
  }

  /** user id -> record, users sorted (a stable document). */
  toJSON() {
    const out = {};
    for (const user of [...this.records.keys()].sort()) out[user] = cloneRecord(this.records.get(user));
    return out;
  }

  clone() {
    return new PinBook(this.toJSON());
  }

  record(user) {
    const r = this.records.get(user);
    return r ? cloneRecord(r) : null;
  }

  /** The accepted key of a user (bytes), or null. */
  pinned(user) {
    const r = this.records.get(user);
    return r ? b64d(r.uik, 32) : null;
  }

  state(user, uik) {
    const r = this.records.get(user);
    if (!r) return 'new';
    return r.uik === keyText(uik) ? r.state : 'changed';
  }

  /** A key seen for `user` (in a verified roster or fetched for admission). */
  observe(user, uik, caseId, now) {
    const key = keyText(uik);
    const r = this.records.get(user);
    if (!r) {
      this.records.set(user, { uik: key, state: 'pinned', updated_ms: now, previous: [], changed: null });
      return 'new';
    }
    if (r.uik === key) return r.state;
    if (r.changed && r.changed.uik === key) {
      if (caseId && !r.changed.cases.includes(caseId) && r.changed.cases.length < MAX_CASES) {
        r.changed.cases = [...r.changed.cases, caseId].sort();
      }
    } else {
      r.changed = { uik: key, seen_ms: now, cases: caseId ? [caseId] : [] };
    }
    return 'changed';
  }

  #decide(user, uik, now, state) {
    const key = keyText(uik);
    const r = this.records.get(user);
    const previous = r ? [...r.previous] : [];
    if (r && r.uik !== key && !previous.includes(r.uik)) previous.push(r.uik);
    this.records.set(user, {
      uik: key, state, updated_ms: now, previous: previous.slice(-MAX_PREVIOUS), changed: null,
    });
  }

  /** Take `uik` as the user's key, unverified (accepting a change withdraws verification). */
  accept(user, uik, now) {
    this.#decide(user, uik, now, 'pinned');
  }

  /** Take `uik` as the user's key, verified (after comparing safety numbers). */
  verify(user, uik, now) {
    this.#decide(user, uik, now, 'verified');
  }

  unverify(user, now) {
    const r = this.records.get(user);
    if (!r) return;
    r.state = 'pinned';
    r.updated_ms = now;
  }

  /** Pending changes, by user id: {user, old, new, cases, wasVerified} (keys as bytes). */
  changes() {
    return [...this.records.keys()].sort()
      .filter((user) => this.records.get(user).changed)
      .map((user) => {
        const r = this.records.get(user);
        return {
          user, old: b64d(r.uik, 32), new: b64d(r.changed.uik, 32), cases: [...r.changed.cases],
          wasVerified: r.state === 'verified',
        };
      });
  }

  /** Users other than me whose key in this roster is a change nobody accepted (sorted). */
  blocking(pairs, me) {
    return pairs.filter(([user, uik]) => user !== me && this.state(user, uik) === 'changed')
      .map(([user]) => user).sort();
  }

  /** The change of one user for a roster key (for messages), even if never observed. */
  changeFor(user, uik) {
    const r = this.records.get(user);
    if (!r) return null;
    const key = keyText(uik);
    return {
      user, old: b64d(r.uik, 32), new: b64d(key, 32),
      cases: r.changed && r.changed.uik === key ? [...r.changed.cases] : [],
      wasVerified: r.state === 'verified',
    };
  }

  /** Before any entry this client signs: own key as on this device, no unaccepted change. */
  commitCheck(pairs, me, myUik) {
    ownCheck(pairs, me, myUik);
    const users = this.blocking(pairs, me);
    if (users.length) {
      const byUser = new Map(pairs);
      throw new TrustError('identity_changed', `identity key changed for ${users.join(', ')}`,
        users.map((u) => this.changeFor(u, byUser.get(u))));
    }
  }

  /** Merge another device's pins into these; true if anything here changed. */
  merge(other) {
    let changed = false;
    const users = new Set([...this.records.keys(), ...other.records.keys()]);
    for (const user of users) {
      const mine = this.records.get(user);
      const merged = mergeRecords(mine, other.records.get(user));
      if (!mine || !sameRecord(mine, merged)) {
        this.records.set(user, merged);
        changed = true;
      }
    }
    return changed;
  }

  equals(other) {
    return JSON.stringify(this.toJSON()) === JSON.stringify(other.toJSON());
  }
}

/** The viewer listed under a key other than this device's own: fail closed. */
export function ownCheck(pairs, me, myUik) {
  const mine = keyText(myUik);
  for (const [user, uik] of pairs) {
    if (user === me && keyText(uik) !== mine) {
      throw new CryptoError('own_identity_mismatch', 'the roster lists you under an identity key that is not yours');
    }
  }
}

const docBytes = (book) => new TextEncoder().encode(JSON.stringify(book.toDocument())).length;

/**
 * The part of the book that is synced when all of it would not fit in `maxBytes` of
 * document: every decision a person made or must make (verified keys, accepted
 * changes, pending changes) first, then plain first-use pins, newest first (as
 * collab/client/pins.py fit). Nothing is dropped from this device's own book; a pin left
 * out is re-learnt by the other devices on first use.
 */
export function fitPins(book, maxBytes) {
  if (docBytes(book) <= maxBytes) return book;
  const decided = (r) => r.state === 'verified' || r.previous.length > 0 || r.changed !== null;
  const order = [...book.records.entries()].sort(([, a], [, b]) => (
    (decided(a) === decided(b)) ? b.updated_ms - a.updated_ms : (decided(a) ? -1 : 1)));
  let budget = maxBytes - docBytes(new PinBook());
  const kept = {};
  for (const [user, record] of order) {
    const size = new TextEncoder().encode(JSON.stringify({ [user]: record })).length - 1; // braces -> a comma
    if (size > budget) continue;
    kept[user] = record;
    budget -= size;
  }
  return new PinBook(kept);
}

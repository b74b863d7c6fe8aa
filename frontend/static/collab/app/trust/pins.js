// Identity pins: which identity key (UIK) this user has seen, accepted or
// verified for every other user. Pure policy, no I/O; the same rules as
// collab/client/pins.py, both tested on tests/policy/trust_scenarios.json.
//
// Record per user (the JSON form is the pins document of docs and cr1/pins.js):
//   {uik: b64, state: 'pinned'|'verified', updated_ms, previous: [b64, oldest first],
//    changed: null | {uik: b64, seen_ms, cases: [case ids, oldest first]}}
// state(user, uik): 'new' (no record) | record.state (same key) | 'changed'.
// Limits (LIMITS, the `limits` of the scenarios file): a change keeps the newest
// cases_per_change case ids, `previous` the newest `previous` keys; parsing cuts a
// longer list the same way and never refuses it.

import { CryptoError, b64d, b64e } from '../../cr1/index.js';

export const PINS_FORMAT = 'collab-pins';
export const STATES = Object.freeze(['new', 'pinned', 'verified', 'changed']);
/** The same numbers as collab/client/pins.py (tests/policy/trust_scenarios.json `limits`). */
export const LIMITS = Object.freeze({ cases_per_change: 64, previous: 16 });
const MAX_PREVIOUS = LIMITS.previous;
const MAX_CASES = LIMITS.cases_per_change;

/** Keep the newest `n` (the end of the list). */
const newest = (list, n) => list.slice(Math.max(0, list.length - n));

/** Unique, first occurrence kept, order kept. */
const unique = (list) => [...new Set(list)];

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
  const previous = newest(unique(raw.previous.map(keyText)), MAX_PREVIOUS);
  let changed = null;
  if (raw.changed !== null && raw.changed !== undefined) {
    const c = raw.changed;
    if (!Number.isSafeInteger(c.seen_ms) || !Array.isArray(c.cases)) throw new CryptoError('bad_field', 'pin changed');
    if (c.cases.some((x) => typeof x !== 'string')) throw new CryptoError('bad_field', 'pin changed cases');
    changed = { uik: keyText(c.uik), seen_ms: c.seen_ms, cases: newest(unique(c.cases), MAX_CASES) };
  }
  return { uik, state: raw.state, updated_ms: raw.updated_ms, previous, changed };
}

const STRENGTH = { pinned: 0, verified: 1 };

/** The later decision of two records (tie: verified, then local). */
function newer(local, remote) {
  if (remote.updated_ms !== local.updated_ms) return remote.updated_ms > local.updated_ms ? remote : local;
  return STRENGTH[remote.state] > STRENGTH[local.state] ? remote : local;
}

/**
 * Per user, the same rule as collab/client/pins.py merge:
 * - the same key: the newer decision wins (tie: verified, then local); a pending
 *   change survives when it names a key other than the merged one (local first);
 * - different keys: a record whose `previous` holds the other's key supersedes it
 *   (an accept made on another device; both do: the later decision, a tie: local);
 *   otherwise the stronger wins (verified over pinned), on a tie the earlier (first
 *   use), then local, and the losing key becomes the winner's pending change
 *   (seen_ms = the loser's updated_ms, no cases; observing re-lists the cases). So a device's first-use pin of a key the server
 *   served never replaces a key decided or seen first elsewhere.
 */
export function mergeRecords(local, remote) {
  if (!local) return cloneRecord(remote);
  if (!remote) return cloneRecord(local);
  const pendingOf = (merged) => {
    if (local.changed && local.changed.uik !== merged.uik) return cloneRecord(local).changed;
    if (remote.changed && remote.changed.uik !== merged.uik) return cloneRecord(remote).changed;
    return null;
  };
  if (local.uik === remote.uik) {
    const merged = cloneRecord(newer(local, remote));
    merged.changed = pendingOf(merged);
    return merged;
  }
  const remoteSupersedes = remote.previous.includes(local.uik);
  const localSupersedes = local.previous.includes(remote.uik);
  if (remoteSupersedes || localSupersedes) {
    let winner;
    // Each moved on from the other's key: the later decision (a tie: local).
    if (remoteSupersedes && localSupersedes) winner = remote.updated_ms > local.updated_ms ? remote : local;
    else winner = remoteSupersedes ? remote : local;
    const merged = cloneRecord(winner);
    merged.changed = pendingOf(merged);
    return merged;
  }
  let winner;
  if (STRENGTH[local.state] !== STRENGTH[remote.state]) winner = STRENGTH[remote.state] > STRENGTH[local.state] ? remote : local;
  else winner = remote.updated_ms < local.updated_ms ? remote : local;
  const loser = winner === local ? remote : local;
  const merged = cloneRecord(winner);
  merged.changed = { uik: loser.uik, seen_ms: loser.updated_ms, cases: [] };
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

  /**
   * A key seen for `user` (in a verified roster or fetched for admission).
   * `historical`: a roster below the head of its case; a key this user had before
   * (in `previous`) is then no change (it was that user's key when the entry was
   * made). A user seen for the first time is pinned either way.
   */
  observe(user, uik, caseId, now, { historical = false } = {}) {
    const key = keyText(uik);
    const r = this.records.get(user);
    if (!r) {
      this.records.set(user, { uik: key, state: 'pinned', updated_ms: now, previous: [], changed: null });
      return 'new';
    }
    if (r.uik === key) return r.state;
    if (historical && r.previous.includes(key)) return 'changed';
    if (r.changed && r.changed.uik === key) {
      if (caseId && !r.changed.cases.includes(caseId)) {
        r.changed.cases = newest([...r.changed.cases, caseId], MAX_CASES); // the newest cases kept
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
      uik: key, state, updated_ms: now, previous: newest(previous, MAX_PREVIOUS), changed: null,
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
          user, old: b64d(r.uik, 32), new: b64d(r.changed.uik, 32), cases: [...r.changed.cases].sort(),
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
      cases: r.changed && r.changed.uik === key ? [...r.changed.cases].sort() : [],
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

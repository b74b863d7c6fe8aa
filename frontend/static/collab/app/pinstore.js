// This user's identity pins on this browser (app/trust/pins.js is the policy):
// kept in IndexedDB (keystore.js), observed on every verified roster (keys only
// listed or fetched for a review are never recorded: state() is pure), and synced
// across the user's devices through
// GET/PUT /api/identity/pins, sealed and signed with the identity key
// (cr1/pins.js). The server can neither read, alter nor roll the copy back: a
// version lower than the highest seen here is refused (CryptoError 'rollback').

import {
  CryptoError, DeviceCert, b64d, b64e, ed25519Public, equal, verifyDeviceCert,
} from '../cr1/index.js';
import { MAX_BLOB, openPins, sealPins, signPins, verifyPins } from '../cr1/pins.js';
import { ApiError, api } from './api.js';
import { loadPins, savePins } from './keystore.js';
import { PinBook, fitPins, ownCheck, rosterPairs } from './trust/pins.js';

const SYNC_ATTEMPTS = 4;
const MAX_DOCUMENT = MAX_BLOB - 24 - 16; // the sealed blob: nonce, MAC, document

const IO = { api, savePins, loadPins };

export class PinStore {
  /** io: {api, savePins, loadPins} (keystore.js and api.js; replaced in node tests). */
  constructor(device, book, version, io = IO) {
    this.io = io;
    this.device = device;
    this.me = device.userId;
    this.book = book;
    this.version = version; // highest version of the synced copy seen (0: none)
    this.myUik = device.uikSeed ? ed25519Public(device.uikSeed) : null;
    this.listeners = new Set();
    this.flushing = Promise.resolve();
    this.flushQueued = false;
    this.lastSyncError = null;
    this.errorListeners = new Set();
  }

  /** fn(err) when a background sync fails (a rollback or bad signature is a security problem). */
  onSyncError(fn) {
    this.errorListeners.add(fn);
  }

  syncFailed(err) {
    this.lastSyncError = err;
    for (const fn of this.errorListeners) fn(err);
  }

  static async open(device, io = IO) {
    const stored = await io.loadPins(device.userId);
    let book = new PinBook();
    let version = 0;
    if (stored) {
      try {
        book = PinBook.fromDocument(stored.doc);
        version = Number.isSafeInteger(stored.version) ? stored.version : 0;
      } catch {
        book = new PinBook(); // unreadable local copy: start over (the synced copy merges back)
      }
    }
    return new PinStore(device, book, version, io);
  }

  onChange(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  #changed() {
    for (const fn of this.listeners) {
      try { fn(); } catch { /* a view's problem, not the store's */ }
    }
    if (this.flushQueued) return;
    this.flushQueued = true;
    this.flushing = this.flushing.then(async () => {
      this.flushQueued = false;
      await this.save();
      await this.sync().catch((err) => this.syncFailed(err));
    });
  }

  async save() {
    await this.io.savePins(this.me, { doc: this.book.toDocument(), version: this.version });
  }

  /** This user's key as this device knows it: from the local identity seed, or
   * (an older device without the seed) the key that certified this device. */
  ownKey(pairs) {
    if (this.myUik) return this.myUik;
    const cert = DeviceCert.fromWire(this.device.cert);
    for (const [user, uik] of pairs) {
      if (user !== this.me) continue;
      try {
        verifyDeviceCert(cert, uik);
        return uik;
      } catch {
        throw new CryptoError('own_identity_mismatch', 'the roster lists you under an identity key that did not certify this device');
      }
    }
    return null;
  }

  /**
   * CaseSession hook: the entries just verified (epoch order), before any is kept.
   * The own identity check fails closed at the new head only (an older roster may
   * list a key of ours since replaced); every roster is observed, oldest first,
   * those below the head as historical (a key the user had before is no change).
   */
  observeEntries(entries, caseId) {
    if (!entries.length) return;
    const head = rosterPairs(entries.at(-1).roster);
    const mine = this.ownKey(head);
    if (mine) ownCheck(head, this.me, mine);
    let changed = false;
    const now = Date.now();
    entries.forEach((entry, i) => {
      const historical = i < entries.length - 1;
      for (const [user, uik] of rosterPairs(entry.roster)) {
        if (user === this.me) continue;
        const state = this.book.state(user, uik);
        if (state === 'pinned' || state === 'verified') continue; // the pinned key: nothing to record
        const before = state === 'new' ? null : JSON.stringify(this.book.record(user));
        this.book.observe(user, uik, caseId, now, { historical });
        if (state === 'new' || JSON.stringify(this.book.record(user)) !== before) changed = true;
      }
    });
    if (changed) this.#changed();
  }

  /** CaseSession hook: the roster of every entry this device is about to sign. */
  checkCommit(roster) {
    const pairs = rosterPairs(roster);
    const mine = this.ownKey(pairs) ?? this.myUik;
    if (!mine) throw new CryptoError('own_identity_mismatch', 'this device does not know its identity key');
    this.book.commitCheck(pairs, this.me, mine);
  }

  state(user, uik) {
    return this.book.state(user, uik);
  }

  changeFor(user, uik) {
    return this.book.changeFor(user, uik);
  }

  blocking(roster) {
    return this.book.blocking(rosterPairs(roster), this.me);
  }

  /** Pending changes of users in this roster (with their roster key), for the banner. */
  changesIn(roster) {
    const inRoster = new Map(rosterPairs(roster));
    return this.book.changes().filter((c) => inRoster.has(c.user) && equal(inRoster.get(c.user), c.new));
  }

  accept(user, uik) {
    this.book.accept(user, uik, Date.now());
    this.#changed();
  }

  verify(user, uik) {
    this.book.verify(user, uik, Date.now());
    this.#changed();
  }

  unverify(user) {
    this.book.unverify(user, Date.now());
    this.#changed();
  }

  /** A sync after any pending save and sync (the room awaits it before it reads a
   * roster, so a decision made on another device is known first). Rejects as sync. */
  syncNow() {
    const run = this.flushing.then(() => this.sync());
    this.flushing = run.catch(() => {});
    return run;
  }

  /** Wait for pending saves and syncs (tests, page unload). */
  async settled() {
    await this.flushing;
  }

  /** GET, verify, open, merge; PUT version+1 if the merged book differs (bounded). */
  async sync() {
    const seed = this.device.uikSeed;
    if (!seed) return false; // an older device without the identity seed cannot sign
    for (let attempt = 0; attempt < SYNC_ATTEMPTS; attempt++) {
      let remote = null;
      let version = 0;
      try {
        remote = await this.io.api('GET', '/api/identity/pins');
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 404)) throw err;
      }
      if (remote) {
        version = remote.version;
        if (!Number.isSafeInteger(version) || version < 1) throw new CryptoError('bad_field', 'pins version');
        if (version < this.version) throw new CryptoError('rollback', `the server served pins version ${version} after ${this.version}`);
        const blob = b64d(remote.blob);
        verifyPins(this.myUik, this.me, version, blob, b64d(remote.sig, 64));
        const doc = JSON.parse(new TextDecoder().decode(openPins(seed, blob)));
        const theirs = PinBook.fromDocument(doc);
        const changed = this.book.merge(theirs);
        this.version = version;
        await this.save();
        if (changed) for (const fn of this.listeners) fn();
        if (fitPins(this.book, MAX_DOCUMENT).equals(theirs)) return true;
      } else if (this.version > 0) {
        throw new CryptoError('rollback', `the server has no pins after version ${this.version}`);
      } else if (!this.book.records.size) {
        return true;
      }
      // A book too large for the server: its decisions first, then the newest pins.
      const synced = fitPins(this.book, MAX_DOCUMENT);
      const blob = sealPins(seed, new TextEncoder().encode(JSON.stringify(synced.toDocument())));
      const next = version + 1;
      const sig = signPins(seed, this.me, next, blob);
      try {
        // The page syncs by itself: background, so it does not postpone automatic logoff.
        await this.io.api('PUT', '/api/identity/pins', { json: { version: next, blob: b64e(blob), sig: b64e(sig) }, background: true });
      } catch (err) {
        if (err instanceof ApiError && err.status === 409 && err.code === 'stale_pins') continue;
        throw err;
      }
      this.version = next;
      await this.save();
      return true;
    }
    return false;
  }
}

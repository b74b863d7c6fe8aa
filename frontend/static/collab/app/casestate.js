// One case as this device sees it: the verified membership log, the epoch keys
// this device can open, and sealing/opening messages. Fails closed: every log
// entry is verified before it is trusted and every message before it is
// decrypted (same rules as collab/client/case_state.py and sdk.py).
//
// Trust (optional `trust` hook, app/pinstore.js): the newly verified entries go
// through trust.observeEntries (own identity as on this device at the new head,
// every roster's pins observed, oldest first), and every entry this device builds
// and every message it seals through trust.checkCommit (own key, no unaccepted
// change in the roster) before it is sent.
//
// Entries are verified once: the memo keeps the verified head (epoch and entry hash,
// which fixes the whole entry, roster included); a later page load takes the entries up
// to it by their hash links only (linkedChain) and verifies only the newer ones. A
// server that rewrites history below the kept head breaks the link: `fork`.
//
// A wrap this device cannot open is not a broken chain: the entry is verified,
// the epoch is recorded in `unavailable` (epoch -> author user id), its messages
// are verified but not decrypted, and the next send first rotates the key.
//
// Key backup (docs/protocol-crypto.md §9d, option `backup`): after a sync that learned
// epoch keys, the keys above the memo's `backedUp` epoch are sealed under the user's
// backup key (from the UIK seed) and uploaded (PUT /api/key-backup); epochs where this
// user was in the roster but this device holds no key (a recovered or enrolled device)
// are fetched (GET /api/key-backup), opened and checked against the epoch's verified
// key_commit. An item that fails any check leaves its epoch unavailable.
//
// Revoked devices (`revoked`, device ids the server lists): before any other entry this
// device commits remove_device for each one in the roster it may remove (its own user's,
// or anyone's as owner/admin, an owner's only as owner); a 409
// revoked_device_in_roster names them and is answered the same way, then retried.

import {
  Action, CryptoError, Envelope, LogEntry, Manifest, RemoveDeviceBody, RemoveUserBody, ReplayGuard, Role, b64d, b64e,
  backupKey, buildEntry, checkSender, keyCommit, openBackupItem, RotateBody, sealBackupItem, ShareHistoryBody, concat,
  equal, openEnvelope, openHistory, openWrap, randomBytes, sealMessage, sha512, verifyChain, verifyEnvelope,
} from '../cr1/index.js';
import { api, ApiError } from './api.js';
import { loadMemo, saveMemo } from './keystore.js';

const LOG_PAGE = 500;
const COMMIT_ATTEMPTS = 5;
const BACKUP_PAGE = 500;

/** Thrown by open() for a verified message of an epoch whose key this device lacks. */
export class UnavailableMessage extends Error {
  constructor(seq, epoch, author, header) {
    super(`message #${seq} is in epoch ${epoch}, whose key could not be opened on this device`);
    this.name = 'UnavailableMessage';
    this.seq = seq;
    this.epoch = epoch;
    this.author = author; // user id of the log entry's author (whose wrap failed)
    this.header = header;
  }
}

export class CaseSession {
  constructor(caseId, device, { trust = null, backup = false } = {}) {
    this.caseId = caseId;
    this.device = device;
    this.trust = trust;
    this.backup = backup && Boolean(device.uikSeed); // key backup on (needs the UIK seed)
    this.backupTried = new Set(); // epochs already looked up in the backup
    this.backupErrors = []; // {epoch, code}: items that failed a check (never trusted)
    this.onBackupError = () => {};
    this.revoked = new Set(); // device ids the server says are revoked
    this.unavailable = new Map(); // epoch -> author user id of the entry whose wrap failed
    this.chain = new Map(); // epoch (Number) -> verified LogEntry
    this.keys = new Map(); // epoch -> epoch key
    this.replay = new ReplayGuard();
    this.seen = new Map(); // server seq -> [fingerprint hex, opened message]
    this.memo = null;
    this.pageSize = LOG_PAGE; // the server's page of log entries (smaller in tests)
    this.historyFailures = []; // {epoch, entry, author}: shared earlier keys that did not open here
  }

  /** The head epoch key is missing here (a bad wrap): sending must rotate first. */
  get headKeyMissing() {
    const head = this.head;
    return Boolean(head && head.roster.device(this.device.deviceId) && !this.keys.has(Number(head.epoch)));
  }

  /** Before sealing: a head epoch whose key this device could not open gets a fresh
   * key (a signed rotate entry), so the message is readable by the whole roster. */
  async ensureHeadKey() {
    if (!this.headKeyMissing) return null;
    return this.commit((head) => {
      if (this.keys.has(Number(head.epoch))) throw new KeyAvailable();
      return new RotateBody();
    }).catch((err) => {
      if (err instanceof KeyAvailable) return null;
      throw err;
    });
  }

  get head() {
    let best = null;
    for (const e of this.chain.values()) if (best === null || e.epoch > best.epoch) best = e;
    return best;
  }

  get roster() {
    return this.head?.roster ?? null;
  }

  async loadMemo() {
    if (!this.memo) this.memo = await loadMemo(this.device.userId, this.caseId);
    return this.memo;
  }

  async saveMemo() {
    await saveMemo(this.device.userId, this.caseId, this.memo);
  }

  /** Accept new entries on top of the trusted head; learn this device's keys.
   * `verified` ({epoch, hash}: a head this device verified before, kept in the memo):
   * on a session holding no chain yet, the entries up to it are taken by their hash
   * links only (linkedChain) and only those above it are verified. Returns the
   * entries verified now. */
  accept(entries, { verified = null } = {}) {
    const linked = verified && verified.epoch >= 0 && this.chain.size === 0 ? linkedChain(entries, verified) : [];
    const trusted = linked.at(-1) ?? this.head;
    for (const e of entries) {
      const known = this.chain.get(Number(e.epoch));
      if (known && known !== e && !known.equals(e)) throw new CryptoError('fork', `two different entries for epoch ${e.epoch}`);
    }
    const fresh = entries.filter((e) => trusted === null || e.epoch > trusted.epoch);
    const checked = verifyChain(fresh, { trustedHead: trusted });
    const taken = [...linked, ...checked];
    for (const entry of taken) {
      if (entry.caseId !== this.caseId) throw new CryptoError('wrong_case', 'entry belongs to another case');
    }
    // Trust before anything is kept: a head roster listing this user under a foreign
    // key stops here (own_identity_mismatch), and nothing of it is stored; every
    // roster's keys are observed (those below the head as historical).
    this.trust?.observeEntries(taken, this.caseId);
    for (const entry of taken) {
      const epoch = Number(entry.epoch);
      this.chain.set(epoch, entry);
      if (!entry.roster.device(this.device.deviceId)) continue;
      try {
        this.keys.set(epoch, openWrap(entry, this.device.deviceId, this.device.dxkSecret));
        this.unavailable.delete(epoch);
      } catch (err) {
        if (!(err instanceof CryptoError)) throw err;
        this.unavailable.set(epoch, entry.authorUserId); // a bad wrap: no key for this epoch here
      }
      if (entry.action === Action.SHARE_HISTORY) this.openHistory(entry);
    }
    return checked;
  }

  /** Each shared earlier key on its own (as case_state.py _open_history): one bad
   * wrap costs only its epoch, recorded as unavailable with the entry's author. */
  openHistory(entry) {
    const body = entry.body();
    for (const item of body.items) {
      if (item.deviceId !== this.device.deviceId) continue;
      const single = { caseId: entry.caseId, body: () => new ShareHistoryBody(body.hepk, [item]) };
      let shared;
      try {
        shared = openHistory(single, this.device.deviceId, this.device.dxkSecret, this.chain);
      } catch (err) {
        if (!(err instanceof CryptoError)) throw err;
        const ep = Number(item.epoch);
        this.historyFailures.push({ epoch: ep, entry: Number(entry.epoch), author: entry.authorUserId });
        if (!this.keys.has(ep)) this.unavailable.set(ep, entry.authorUserId);
        continue;
      }
      for (const [ep, k] of shared) {
        if (!this.keys.has(Number(ep))) this.keys.set(Number(ep), k);
        this.unavailable.delete(Number(ep));
      }
    }
  }

  /** Fetch and verify new log entries; detect a rolled-back or forked log. All pages
   * are fetched before any is accepted, so only the real head is checked as the head.
   * Entries up to the head this device verified before (the memo's) are not verified
   * again, only hash-linked to it: a different history below it is a fork. */
  async sync() {
    await this.loadMemo();
    const fetched = [];
    const fromScratch = this.chain.size === 0;
    let after = this.head ? Number(this.head.epoch) : -1;
    for (;;) {
      const page = await api('GET', `/api/cases/${this.caseId}/log?after=${after}`);
      const entries = page.entries.map((item) => LogEntry.decode(b64d(item.entry)));
      fetched.push(...entries);
      const last = Math.max(after, ...entries.map((e) => Number(e.epoch)));
      // `more` (byte-capped pages); a server without it: a full page means more.
      const more = typeof page.more === 'boolean' ? page.more : entries.length >= this.pageSize;
      if (!more || last <= after) break;
      after = last;
    }
    const memo = this.memo;
    const verified = fromScratch && memo.headEpoch >= 0 && memo.headHash
      ? { epoch: memo.headEpoch, hash: b64d(memo.headHash, 64) } : null;
    this.accept(fetched, { verified });
    const head = this.head;
    if (!head) throw new CryptoError('truncated', 'the server sent no log for this case');
    if (memo.headEpoch > head.epoch) {
      throw new CryptoError('stale_head', `the server rolled the log back from epoch ${memo.headEpoch}`);
    }
    if (memo.headEpoch >= 0 && b64e(this.chain.get(memo.headEpoch).entryHash()) !== memo.headHash) {
      throw new CryptoError('fork', `the log differs at epoch ${memo.headEpoch} from the one verified before`);
    }
    await this.remember();
    if (this.backup) await this.syncBackup();
    return head;
  }

  // --- key backup ------------------------------------------------------------------

  /** Restore missing keys from the backup, then upload keys not backed up yet. Never
   * throws: a failure leaves epochs unavailable and is reported to onBackupError. */
  async syncBackup() {
    try {
      await this.restoreKeys();
      await this.uploadKeys();
    } catch (err) {
      this.onBackupError(err);
    }
  }

  /** Epochs whose roster holds this user but whose key this device lacks. */
  missingEpochs() {
    const out = [];
    for (const [epoch, entry] of this.chain) {
      if (!this.keys.has(epoch) && entry.roster.user(this.device.userId)) out.push(epoch);
    }
    return out.sort((a, b) => a - b);
  }

  async restoreKeys() {
    const missing = new Set(this.missingEpochs().filter((e) => !this.backupTried.has(e)));
    if (!missing.size) return 0;
    for (const e of missing) this.backupTried.add(e);
    const key = backupKey(this.device.uikSeed);
    let after = Math.min(...missing) - 1;
    let found = 0;
    for (;;) {
      const page = await api('GET', `/api/key-backup?case=${this.caseId}&after=${after}`, { device: this.device.deviceId });
      const items = Array.isArray(page.items) ? page.items : [];
      for (const it of items) {
        const epoch = Number(it?.epoch);
        if (!Number.isSafeInteger(epoch) || epoch <= after) continue;
        after = epoch;
        if (!missing.has(epoch)) continue;
        const entry = this.chain.get(epoch);
        try {
          const k = openBackupItem(key, b64d(String(it.item), 112), this.caseId, epoch);
          if (!equal(keyCommit(k, this.caseId, epoch), entry.keyCommit)) {
            throw new CryptoError('key_commit_mismatch', `backed-up key for epoch ${epoch} does not match`);
          }
          this.keys.set(epoch, k);
          this.unavailable.delete(epoch);
          found += 1;
        } catch (err) {
          if (!(err instanceof CryptoError)) throw err;
          this.backupErrors.push({ epoch, code: err.code });
        }
      }
      if (!page.more || !items.length) break;
    }
    return found;
  }

  async uploadKeys() {
    const done = this.memo.backedUp ?? -1;
    const epochs = [...this.keys.keys()].filter((e) => e > done).sort((a, b) => a - b);
    if (!epochs.length) return 0;
    // Only for a case this user is a member of now (the server refuses the others).
    if (!this.roster?.user(this.device.userId)) return 0;
    const key = backupKey(this.device.uikSeed);
    for (let i = 0; i < epochs.length; i += BACKUP_PAGE) {
      const chunk = epochs.slice(i, i + BACKUP_PAGE);
      const items = chunk.map((epoch) => ({
        case: this.caseId, epoch, item: b64e(sealBackupItem(key, this.caseId, epoch, this.keys.get(epoch))),
      }));
      await api('PUT', '/api/key-backup', { json: { items }, device: this.device.deviceId, background: true });
      this.memo.backedUp = chunk.at(-1);
      await this.saveMemo();
    }
    return epochs.length;
  }

  // --- revoked devices -------------------------------------------------------------

  /** May this device commit remove_device for a device of `userId` (authorize rules)? */
  mayRemoveDeviceOf(userId, roster = this.roster) {
    if (!roster?.device(this.device.deviceId)) return false;
    if (userId === this.device.userId) return true;
    const mine = roster.user(this.device.userId)?.role;
    const target = roster.user(userId)?.role;
    if (mine !== Role.OWNER && mine !== Role.ADMIN) return false;
    return target !== Role.OWNER || mine === Role.OWNER;
  }

  /** Revoked devices in the head roster this device may remove. */
  removableRevoked() {
    const roster = this.roster;
    if (!roster) return [];
    return roster.devices.filter((d) => this.revoked.has(d.deviceId) && this.mayRemoveDeviceOf(d.userId, roster));
  }

  /** Commit remove_device for each of them (one entry each). */
  async removeRevoked() {
    let removed = 0;
    for (const d of this.removableRevoked()) {
      await this.commit((head) => {
        if (!head.roster.device(d.deviceId)) throw new AlreadyDone();
        return new RemoveDeviceBody(d.userId, d.deviceId);
      }, { removal: true, background: true }).then(() => { removed += 1; }, (err) => {
        if (!(err instanceof AlreadyDone)) throw err;
      });
    }
    return removed;
  }

  async remember() {
    const head = this.head;
    this.memo.headEpoch = Number(head.epoch);
    this.memo.headHash = b64e(head.entryHash());
    await this.saveMemo();
  }

  /** Genesis of a new case (before it exists on the server). */
  async genesis(body) {
    const { entry } = await buildEntry(null, body, {
      signer: this.device.signer, authorUserId: this.device.userId,
      authorDeviceId: this.device.deviceId, createdMs: Date.now(), caseId: this.caseId,
    });
    return entry;
  }

  /** Build, sign and submit the next entry; on a lost race re-sync and rebuild.
   * Revoked devices this device may remove go first (not for a removal itself). */
  async commit(makeBody, { removal = false, background = false } = {}) {
    for (let i = 0; i < COMMIT_ATTEMPTS; i++) {
      await this.sync();
      if (!removal && this.removableRevoked().length) {
        await this.removeRevoked();
        await this.sync();
      }
      const body = makeBody(this.head);
      const shrinks = body instanceof RemoveDeviceBody || body instanceof RemoveUserBody;
      const { entry } = await buildEntry(this.head, body, {
        signer: this.device.signer, authorUserId: this.device.userId,
        authorDeviceId: this.device.deviceId, createdMs: Date.now(),
      });
      this.trust?.checkCommit(entry.roster, this.caseId); // own key, no unaccepted change
      try {
        await api('POST', `/api/cases/${this.caseId}/log`, { json: { entry: b64e(entry.encode()) }, device: this.device.deviceId, background });
      } catch (err) {
        if (err instanceof ApiError && err.status === 409 && err.code === 'stale_head') continue;
        if (err instanceof ApiError && err.status === 409 && err.code === 'revoked_device_in_roster' && !shrinks) {
          for (const id of Array.isArray(err.body.devices) ? err.body.devices : []) this.revoked.add(String(id));
          if (this.removableRevoked().length) continue;
        }
        throw err;
      }
      this.accept([entry]);
      await this.remember();
      if (this.backup) await this.syncBackup();
      return entry;
    }
    throw new ApiError(409, { error: 'stale_head', detail: 'The membership log kept changing; try again.' });
  }

  /** Seal a message in the head epoch with the next sender_seq. */
  async seal(body, contentType = 'text', attachments = []) {
    await this.loadMemo();
    const head = this.head;
    // Checked at every seal, so also on a retry after the log moved: a roster that now
    // holds a changed key (or lists this user under a foreign one) gets no message.
    this.trust?.checkCommit(head.roster, this.caseId);
    const key = this.keys.get(Number(head.epoch));
    if (!key) throw new CryptoError('wraps_mismatch', 'this device holds no key for the current epoch');
    this.memo.senderSeq += 1;
    await this.saveMemo();
    return sealMessage({
      signer: this.device.signer, epochKey: key, caseId: this.caseId, epoch: head.epoch,
      logHead: head.entryHash(), senderUserId: this.device.userId, senderDeviceId: this.device.deviceId,
      senderSeq: this.memo.senderSeq, sentMs: Date.now(), contentType, body, attachments,
      clientMsgId: randomBytes(16),
    });
  }

  /** A send was refused and nothing stored: give the sender_seq back. */
  async unseal(envelope) {
    if (this.memo.senderSeq === envelope.header.senderSeq) {
      this.memo.senderSeq -= 1;
      await this.saveMemo();
    }
  }

  async bumpSenderSeq(atLeast) {
    await this.loadMemo();
    if (atLeast > this.memo.senderSeq) {
      this.memo.senderSeq = atLeast;
      await this.saveMemo();
    }
  }

  /**
   * Verify and decrypt one stored message ({seq, stored_at, envelope}).
   * Returns {msg, isNew}; msg = {seq, header, body, manifests, gap, storedAt}.
   * The same server seq with other content is a replay attempt.
   */
  async open(item) {
    const seq = item?.seq;
    if (!Number.isInteger(seq) || seq < 1) throw new CryptoError('bad_field', 'message without a valid sequence number');
    const env = Envelope.fromWire(item.envelope ?? {});
    const fp = b64e(sha512(concat(env.header.encode(), env.sig, env.ct)));
    const known = this.seen.get(seq);
    if (known) {
      if (known[0] !== fp) throw new CryptoError('replay', `the server sent two different messages as #${seq}`);
      return { msg: known[1], isNew: false };
    }
    if (env.header.caseId !== this.caseId) throw new CryptoError('wrong_case', 'message belongs to another case');
    if (!this.chain.has(Number(env.header.epoch))) await this.sync();
    const entry = this.chain.get(Number(env.header.epoch));
    if (!entry) throw new CryptoError('wrong_epoch', 'message names an epoch this client has not verified');
    const dskPub = checkSender(env, entry);
    const key = this.keys.get(Number(env.header.epoch));
    if (!key && this.unavailable.has(Number(env.header.epoch))) {
      verifyEnvelope(env, dskPub); // signed by a roster device: shown as "not available"
      throw new UnavailableMessage(seq, Number(env.header.epoch), this.unavailable.get(Number(env.header.epoch)), env.header);
    }
    if (!key) throw new CryptoError('wraps_mismatch', 'no key for this epoch on this device');
    this.replay.check(env.header);
    const body = openEnvelope(env, key, { senderDskPub: dskPub });
    let manifests;
    try {
      manifests = (Array.isArray(body.attachments) ? body.attachments : []).map((m) => Manifest.fromWire(m));
    } catch (err) {
      throw new CryptoError('bad_body', `bad attachment manifest: ${err.code ?? err}`);
    }
    const gap = this.replay.accept(env.header);
    const msg = { seq, header: env.header, body, manifests, gap, storedAt: item.stored_at };
    this.seen.set(seq, [fp, msg]);
    if (env.header.senderDeviceId === this.device.deviceId) await this.bumpSenderSeq(Number(env.header.senderSeq));
    if (seq > this.memo.lastSeq) {
      this.memo.lastSeq = seq;
      await this.saveMemo();
    }
    return { msg, isNew: true };
  }
}

/**
 * The entries from genesis up to `head` ({epoch: Number, hash: 64 bytes}), a head this
 * device verified before, checked only by their hash links (as case_state.py
 * linked_chain): the entry at head.epoch must hash to head.hash and each one below to
 * the next one's prev_hash. What hashes to a verified head is the chain that was
 * verified, so nothing in it is verified again. Throws `fork` for a different entry
 * at or below the head, `stale_head` when the log stops below it, `wrong_epoch` for a gap.
 */
export function linkedChain(entries, head) {
  const byEpoch = new Map();
  for (const e of entries) {
    const epoch = Number(e.epoch);
    if (epoch > head.epoch) continue;
    const seen = byEpoch.get(epoch);
    if (!seen) byEpoch.set(epoch, e);
    else if (seen !== e && !equal(seen.entryHash(), e.entryHash())) throw new CryptoError('fork', `two different entries for epoch ${epoch}`);
  }
  if (!byEpoch.has(head.epoch)) {
    if (!entries.some((e) => Number(e.epoch) >= head.epoch)) {
      throw new CryptoError('stale_head', `the log was rolled back below epoch ${head.epoch}, which this device verified before`);
    }
    throw new CryptoError('wrong_epoch', `the log skips epoch ${head.epoch}`);
  }
  let expected = head.hash;
  const chain = [];
  for (let epoch = head.epoch; epoch >= 0; epoch--) {
    const entry = byEpoch.get(epoch);
    if (!entry) throw new CryptoError('wrong_epoch', `the log skips epoch ${epoch}`);
    if (!equal(entry.entryHash(), expected)) {
      throw new CryptoError('fork', `the log differs at epoch ${epoch} from the one this device verified before`);
    }
    expected = entry.prevHash;
    chain.push(entry);
  }
  return chain.reverse();
}

class KeyAvailable extends Error {}
class AlreadyDone extends Error {}

export { equal };

// Recall in the browser (docs/workflow.md "Recall"): which removed messages the sender
// really recalled, and the "Recall" action on one's own messages. Mirrors
// collab/client/recall.py: the server says a message is gone (a tombstone in history,
// a `recalled` frame live); only a statement signed by a device of the message's
// sender (protocol-crypto §9e) makes it "recalled by the sender", anything else is
// "removed by the server". The policy functions are pure (tested by node); RecallView
// is the page's part, hooked in by room-page.js.

import { CryptoError, Recall, b64d, b64e, checkRecallNames, recallFor, signRecall, verifyRecall } from '../cr1/index.js';
import { api } from './api.js';
import { fmtDate, h } from './dom.js';

export const RECALLED = 'recalled';
export const REMOVED_BY_SERVER = 'removed_by_server';
export const PURGED = 'purged';
export const DEFAULT_WINDOW_MINUTES = 15;

/** The DSK of `deviceId` if some verified roster (entries of the chain) lists it under
 * `userId`: the message's sending device may have been removed since. */
export function senderDeviceKey(chain, userId, deviceId) {
  for (const entry of chain) {
    const cert = entry.roster.device(deviceId);
    if (cert && cert.userId === userId) return cert.dskPub;
  }
  return null;
}

/** The DSK of the recalling device only if the head roster, or the roster of the message's
 * `epoch` (from the header this client verified; null when not held), lists it under
 * `userId` (protocol-crypto §9e): a device revoked before both cannot recall. */
export function recallingDeviceKey(chain, userId, deviceId, epoch) {
  const entries = [...chain];
  if (!entries.length) return null;
  const head = entries.reduce((best, e) => (Number(e.epoch) > Number(best.epoch) ? e : best));
  const rosters = [head, ...entries.filter((e) => epoch != null && Number(e.epoch) === Number(epoch))];
  return senderDeviceKey(rosters, userId, deviceId);
}

const timeOf = (text) => {
  if (typeof text !== 'string') return null;
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? null : ms;
};

/** RECALLED only if the statement names this case and seq (and exactly the message this
 * client verified, when it holds it), its devices are the sender's (the recalling one in
 * the head roster or the message's epoch roster), and the signature verifies; else REMOVED_BY_SERVER with the failing code. */
export function judgeRecall({ caseId, seq, senderUserId, statement, sig, chain, knownHeader }) {
  const sender = knownHeader ? knownHeader.senderUserId : senderUserId;
  try {
    const recall = Recall.fromWire(statement ?? {});
    if (recall.caseId !== caseId || Number(recall.seq) !== seq) {
      throw new CryptoError('recall_mismatch', 'the recall names another message');
    }
    if (knownHeader) checkRecallNames(recall, knownHeader, seq);
    if (!sender) throw new CryptoError('unauthorized_author', 'no sender named');
    const entries = [...chain];
    if (!senderDeviceKey(entries, sender, recall.senderDeviceId)) {
      throw new CryptoError('unauthorized_author', 'the sending device is not the sender\'s');
    }
    const key = recallingDeviceKey(entries, sender, recall.deviceId, knownHeader ? knownHeader.epoch : null);
    if (!key) throw new CryptoError('unauthorized_author', 'the recalling device is not the sender\'s');
    verifyRecall(key, recall, b64d(sig, 64));
    return { seq, senderUserId: sender, verdict: RECALLED, at: Number(recall.recalledMs), detail: '' };
  } catch (err) {
    if (!(err instanceof CryptoError)) throw err;
    return { seq, senderUserId: sender ?? null, verdict: REMOVED_BY_SERVER, at: null, detail: err.code };
  }
}

/** A history or resume item {seq, removed: {...}} (protocol.md §5). */
export function judgeTombstone(caseId, item, chain, knownHeader) {
  const { seq } = item;
  if (!Number.isInteger(seq) || seq < 1) throw new CryptoError('bad_field', 'tombstone without a valid sequence number');
  const removed = item.removed && typeof item.removed === 'object' ? item.removed : {};
  const at = timeOf(removed.at);
  const sender = typeof removed.sender_user_id === 'string' ? removed.sender_user_id : null;
  const statement = removed.recall;
  if (statement && typeof statement === 'object') {
    const v = judgeRecall({ caseId, seq, senderUserId: sender, statement, sig: statement.sig, chain, knownHeader });
    return v.verdict === RECALLED ? v : { ...v, at };
  }
  return {
    seq,
    senderUserId: knownHeader ? knownHeader.senderUserId : sender,
    verdict: removed.reason === 'purged' ? PURGED : REMOVED_BY_SERVER,
    at,
    detail: '',
  };
}

/** A live `recalled` frame. */
export function judgeFrame(caseId, frame, chain, knownHeader) {
  const { seq } = frame;
  if (!Number.isInteger(seq) || seq < 1) throw new CryptoError('bad_field', 'recalled frame without a valid sequence number');
  const v = judgeRecall({
    caseId, seq, senderUserId: typeof frame.by === 'string' ? frame.by : null,
    statement: frame.recall, sig: frame.sig, chain, knownHeader,
  });
  return v.verdict === RECALLED ? v : { ...v, at: timeOf(frame.at) };
}

/** The one line shown in place of a removed message. */
export function describeRemoval(removal, fmt = (ms) => new Date(ms).toISOString()) {
  const when = removal.at == null ? '?' : fmt(removal.at);
  if (removal.verdict === RECALLED) return `Recalled by the sender at ${when}.`;
  if (removal.verdict === PURGED) return `Removed by the server at ${when} (retention policy).`;
  const why = removal.detail ? `: ${removal.detail}` : '';
  return `Removed by the server at ${when} (no valid recall from its sender${why}).`;
}

/** What the sender is told when the server refuses a recall. */
export function recallRefusal(err) {
  if (err?.code === 'case_on_legal_hold') {
    return ' Not recalled: this case is on legal hold, so its messages cannot be withdrawn while it is held.';
  }
  return ` Not recalled (${err?.code ?? err?.message}).`;
}

/** Whether the "Recall" action belongs on a message: this user's own, still in the window. */
export function recallable({ senderUserId, storedAt }, me, nowMs, windowMinutes = DEFAULT_WINDOW_MINUTES) {
  const stored = timeOf(storedAt);
  return senderUserId === me && stored !== null && nowMs - stored < windowMinutes * 60_000;
}

/** The recall request body for a message this device verified: {recalled_ms, sig}. */
export async function recallBody(signer, header, seq, deviceId, nowMs) {
  const statement = recallFor(header, { seq, deviceId, recalledMs: nowMs });
  return { recalled_ms: nowMs, sig: b64e(await signRecall(signer, statement)) };
}

/** The page's part: the action, the frames and tombstones, and dropping what was held. */
export class RecallView {
  constructor(page) {
    this.page = page; // room-page.js's RoomPage (session, device, items, caseId, me)
    this.removed = new Map(); // seq -> removal
    const minutes = Number(document.body.dataset.recall_window);
    this.windowMinutes = Number.isFinite(minutes) && minutes > 0 ? minutes : DEFAULT_WINDOW_MINUTES;
    this.timer = setInterval(() => this.expireButtons(), 30_000);
  }

  chain() {
    return this.page.session.chain.values();
  }

  known(seq) {
    return this.page.session.seen.get(seq)?.[1] ?? null;
  }

  /** A recall button on one of this user's messages while the window is open. */
  decorate(li, msg) {
    const button = this.button(msg);
    if (button) li.append(button);
  }

  /** The Recall button for one of this user's messages in its window, else null (also
   * used by consult-view.js on one's own report cards and time entries). */
  button(msg) {
    if (!recallable({ senderUserId: msg.header.senderUserId, storedAt: msg.storedAt }, this.page.me, Date.now(), this.windowMinutes)) return null;
    return h('button', {
      type: 'button', class: 'recall-btn', dataset: { storedAt: msg.storedAt },
      onclick: (ev) => this.recall(msg, ev.currentTarget),
    }, 'Recall');
  }

  expireButtons() {
    for (const button of document.querySelectorAll('.recall-btn')) { // timeline and consult record
      const stored = timeOf(button.dataset.storedAt);
      if (stored === null || Date.now() - stored >= this.windowMinutes * 60_000) button.remove();
    }
  }

  async recall(msg, button) {
    button.disabled = true;
    try {
      const body = await recallBody(this.page.device.signer, msg.header, msg.seq, this.page.device.deviceId, Date.now());
      const answer = await api('POST', `/api/cases/${this.page.caseId}/messages/${msg.seq}/recall`, {
        json: body, device: this.page.device.deviceId,
      });
      this.apply(judgeFrame(this.page.caseId, { ...answer, type: 'recalled' }, this.chain(), msg.header));
    } catch (err) {
      button.disabled = false;
      button.after(h('span', { class: 'error recall-error', role: 'status' }, recallRefusal(err)));
    }
  }

  onFrame(frame) {
    const seq = frame.seq;
    if (this.removed.get(seq)?.verdict === RECALLED) return;
    const removal = judgeFrame(this.page.caseId, frame, this.chain(), this.known(seq)?.header ?? null);
    if (seq > this.page.shownUpTo) {
      this.removed.set(seq, removal); // not shown yet: the catch-up brings its place
      return;
    }
    this.apply(removal);
  }

  /** A history or resume item that is removed (a tombstone, or a message this client
   * already knows was recalled): its one line goes in its place; true when it was. */
  onItem(item) {
    const judged = this.removed.get(item?.seq); // also kept across a reload of the list
    if (!item || typeof item.removed !== 'object' || item.removed === null) {
      if (judged?.verdict !== RECALLED) return false; // only the sender's word hides content
      this.apply(judged);
      return true;
    }
    this.apply(judged?.verdict === RECALLED ? judged
      : judgeTombstone(this.page.caseId, item, this.chain(), this.known(item.seq)?.header ?? null));
    return true;
  }

  /** Replace the message with its one line, and drop the plaintext and images held. */
  apply(removal) {
    const { page } = this;
    const held = this.known(removal.seq);
    this.removed.set(removal.seq, removal);
    page.session.seen.delete(removal.seq);
    page.consult?.remove(removal.seq); // a request, report or time entry leaves the record
    const viewer = document.querySelector('#viewer');
    if (held?.manifests?.length && viewer?.open) viewer.close(); // its close clears the image
    const old = page.items.get(removal.seq) ?? document.querySelector(`#messages li[data-seq="${removal.seq}"]`);
    const li = h('li', {
      class: `message removed ${removal.verdict === RECALLED ? 'recalled' : 'server-removed'}`,
      dataset: { seq: String(removal.seq), removal: removal.verdict },
    }, h('p', { class: 'meta' }, describeRemoval(removal, (ms) => fmtDate(new Date(ms).toISOString()))));
    for (const img of old?.querySelectorAll('img') ?? []) {
      if (img.src.startsWith('blob:')) URL.revokeObjectURL(img.src);
    }
    page.items.set(removal.seq, li);
    if (old) old.replaceWith(li);
    else page.insert(li);
    page.shownUpTo = Math.max(page.shownUpTo, removal.seq);
  }

  stop() {
    clearInterval(this.timer);
  }
}

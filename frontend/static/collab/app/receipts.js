// Delivered / read / acknowledged per recipient, for the sender's own messages.
//
// The server stores, per member of a case, how far their clients have received
// (`delivered`) and read (`read`) its messages, and who acknowledged each urgent message;
// GET /api/cases/<id>/receipts gives them after a reload and the socket frames `read`,
// `delivered` and `urgent_ack` move them live. Marks only move forward here too: a stale
// answer never takes one back. Read implies delivered, acknowledged implies read.
//
// All of it is the server's report: nothing is signed, so a lying server could claim a
// read or an acknowledgement that never happened, or hide one (protocol.md §7). Two
// rules keep the claim from naming the wrong people: the recipients are the users the
// server lists AND the verified roster this client holds (`inRoster`; without it nobody,
// failing closed), so a user the server names who is not in the case is never shown;
// and the line says whose report it is (SERVER_REPORTED, its title). No trust or access
// decision is ever made from a receipt.
//
// This page reports its own deliveries with DeliveredReporter: the highest seq it has
// received (live or resumed), debounced, never lower than what it reported before.

/** The words of each state, as the receipt line shows them. */
const WORDS = {
  acknowledged: 'acknowledged by',
  read: 'read by',
  delivered: 'delivered to',
  pending: 'not yet delivered to',
};
const ORDER = ['acknowledged', 'read', 'delivered', 'pending'];

/** The receipt line's title: whose word it is. */
export const SERVER_REPORTED = 'As reported by the server: receipts are not signed, so they are '
  + 'not proof that someone received, read or acknowledged a message.';

function upTo(mark) {
  return mark && Number.isInteger(mark.up_to) && mark.up_to > 0 ? mark.up_to : 0;
}

export class Receipts {
  /** `me`: the signed-in user's id (never a recipient of their own messages);
   * `inRoster(userId)`: whether the verified roster this client holds lists the user. */
  constructor(me, { inRoster = () => false } = {}) {
    this.me = me;
    this.inRoster = inRoster;
    this.members = []; // user ids in the case now (from the receipts answer)
    this.read = new Map(); // user -> {up_to, at}
    this.delivered = new Map(); // user -> {up_to, at}
    this.acks = new Map(); // seq -> Map(user -> at)
  }

  /** An answer of GET /api/cases/<id>/receipts: members and their stored marks. */
  load(answer) {
    if (!answer || !Array.isArray(answer.members)) return;
    this.members = answer.members.map((m) => m.user).filter((u) => typeof u === 'string');
    for (const m of answer.members) {
      if (m.read) this.noteRead(m.user, m.read.up_to, m.read.at);
      if (m.delivered) this.noteDelivered(m.user, m.delivered.up_to, m.delivered.at);
    }
    for (const item of Array.isArray(answer.urgent) ? answer.urgent : []) {
      for (const a of item.acknowledged ?? []) this.noteAck(item.seq, a.user, a.at);
    }
  }

  /** True when the mark moved (the caller re-renders). */
  noteRead(user, seq, at = null) {
    return this.#move(this.read, user, seq, at);
  }

  noteDelivered(user, seq, at = null) {
    return this.#move(this.delivered, user, seq, at);
  }

  noteAck(seq, user, at = null) {
    if (!Number.isInteger(seq) || typeof user !== 'string') return false;
    if (!this.acks.has(seq)) this.acks.set(seq, new Map());
    const acks = this.acks.get(seq);
    if (acks.has(user)) return false;
    acks.set(user, at);
    return true;
  }

  #move(marks, user, seq, at) {
    if (typeof user !== 'string' || !Number.isInteger(seq) || seq <= upTo(marks.get(user))) return false;
    marks.set(user, { up_to: seq, at });
    return true;
  }

  /** Where one recipient is with message `seq`: acknowledged, read, delivered or pending. */
  stateOf(user, seq) {
    if (this.acks.get(seq)?.has(user)) return 'acknowledged';
    if (upTo(this.read.get(user)) >= seq) return 'read';
    if (upTo(this.delivered.get(user)) >= seq) return 'delivered';
    return 'pending';
  }

  /** Recipients of the sender's message: everyone the server lists in the case now who
   * is in the verified roster too, but the sender. Anyone else it names is ignored. */
  recipients() {
    return this.members.filter((u) => u !== this.me && Boolean(this.inRoster(u)));
  }

  /** Per state, the recipients in it, in member order. */
  byState(seq) {
    const groups = Object.fromEntries(ORDER.map((s) => [s, []]));
    for (const user of this.recipients()) groups[this.stateOf(user, seq)].push(user);
    return groups;
  }

  /**
   * The receipt line of an own message, e.g. "Read by Dr Gold · delivered to Sam
   * Patient". `nameOf(user)` gives a display name. Alone in the case: "Delivered" (the
   * server has it).
   */
  summary(seq, nameOf) {
    const groups = this.byState(seq);
    const parts = ORDER.filter((s) => groups[s].length).map((s) => `${WORDS[s]} ${groups[s].map(nameOf).join(', ')}`);
    if (!parts.length) return 'Delivered';
    const line = parts.join(' · ');
    return line[0].toUpperCase() + line.slice(1);
  }
}

/**
 * Reports this page's deliveries: `note(seq)` after a message was received; the highest
 * seq noted goes out as one `delivered {up_to}` frame after `delayMs` without a newer one
 * (many messages in a resume page cost one frame). `post(frame)` returns false when the
 * socket is not open; the mark is then sent with the next note.
 */
export class DeliveredReporter {
  // The timer functions are wrapped: called as a method of this object, the browser's
  // own setTimeout throws "Illegal invocation".
  constructor(post, {
    delayMs = 300, setTimer = (fn, ms) => setTimeout(fn, ms), clearTimer = (id) => clearTimeout(id),
  } = {}) {
    this.post = post;
    this.delayMs = delayMs;
    this.setTimer = setTimer;
    this.clearTimer = clearTimer;
    this.highest = 0;
    this.sent = 0;
    this.timer = null;
  }

  note(seq) {
    if (!Number.isInteger(seq) || seq <= 0) return;
    this.highest = Math.max(this.highest, seq);
    if (this.highest <= this.sent) return;
    if (this.timer !== null) this.clearTimer(this.timer);
    this.timer = this.setTimer(() => this.flush(), this.delayMs);
  }

  flush() {
    this.timer = null;
    if (this.highest > this.sent && this.post({ type: 'delivered', up_to: this.highest })) this.sent = this.highest;
  }

  stop() {
    if (this.timer !== null) this.clearTimer(this.timer);
    this.timer = null;
  }
}

/**
 * The acknowledgements of an urgent message worth showing: `acks` (Map user -> at, from
 * the server) without any user the verified roster does not list (`inRoster`; without
 * it none). A member who left since is not listed either: the roster is the case now.
 */
export function verifiedAcks(acks, inRoster = () => false) {
  return new Map([...(acks ?? new Map()).entries()].filter(([user]) => Boolean(inRoster(user))));
}

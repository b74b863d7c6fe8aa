// The case room: live, end-to-end-encrypted messages and images, receipts,
// typing and presence, membership (add, remove, join requests) and safety
// numbers. Every log entry and message is verified before it is shown.
// Trust policy lives in small modules: trust/pins.js and pinstore.js (identity
// pins), trust/admission.js and admission-view.js (nobody is added without a
// click in the admission dialog), trust-view.js (changed keys, safety numbers).

import {
  AddUserBody, AttachmentRef, LeaveRequest, ReplayGuard, makeHistoryBody, signEnrol, signLeave, b64e, DeviceCert, RemoveDeviceBody,
  RemoveUserBody, Role, toHex, b64d,
} from '../cr1/index.js';
import { AdmissionView } from './admission-view.js';
import { EscalationView } from './escalation-view.js';
import { api } from './api.js';
import { downloadAttachment, uploadAttachment } from './blobs.js';
import { CaseSession, UnavailableMessage } from './casestate.js';
import { ConsultView } from './consult-view.js';
import { $, errorText, fmtDate, fmtTime, h, replace, say } from './dom.js';
import { sanitiseImage } from './images.js';
import { MarkupView, describeMarked } from './markup-view.js';
import { createInvitation } from './invite-create.js';
import { sendMessage } from './messaging.js';
import { addNameHint, knownName, lookupUser, nameOf, restrictLookups } from './names.js';
import { PinStore } from './pinstore.js';
import { drawQr } from './qr.js';
import { DeliveredReporter, Receipts, SERVER_REPORTED, verifiedAcks } from './receipts.js';
import { onSessionEnd } from './session.js';
import { RecallView } from './recall.js';
import { retentionNote } from './retention.js';
import { RoomSocket } from './socket.js';
import { checkDirectAdd, checkedKeys } from './trust/admission.js';
import { TrustError } from './trust/pins.js';
import { TrustView } from './trust-view.js';
import { wireExport } from './export.js';

const ROLE_NAMES = { [Role.OWNER]: 'Owner', [Role.ADMIN]: 'Admin', [Role.MEMBER]: 'Member', [Role.PATIENT]: 'Patient' };
const IMAGE_TYPES = new Set(['image/jpeg', 'image/png', 'image/webp', 'image/gif']);
// Messages a catch-up page asks for (the server allows 1,000; its byte cap binds first).
const RESUME_PAGE = 500;
const TRANSIENT_ERRORS = new Set(['session_ended', 'unavailable', 'too_slow']);
const TYPING_SHOW_MS = 6000;
const ONLINE_MS = 2 * 60 * 1000;
// What each audit action means, said to a patient: "<who> <words>" (docs/audit.md,
// "Who accessed my case"). An action missing here is shown by its name.
const ACCESS_WORDS = {
  case_opened: 'opened this case',
  case_status_changed: 'changed the status of the case',
  log_entry_committed: 'changed who is in this case',
  join_requested: 'asked to join this case',
  join_declined: 'declined a request to join',
  join_withdrawn: 'withdrew a request to join',
  message_stored: 'sent a message',
  messages_delivered: 'received messages',
  history_read: 'read the case history',
  attachment_uploaded: 'shared a file or picture',
  attachment_downloaded: 'downloaded a file or picture',
  urgent_acknowledged: 'acknowledged an urgent message',
  leave_requested: 'asked to leave this case',
  invitation_created: 'invited someone to this case',
  invitation_opened: 'opened an invitation to this case',
  invitation_proof: 'confirmed an invitation on their device',
  invitation_accepted: 'accepted an invitation to this case',
  invitation_revoked: 'cancelled an invitation',
  invitation_expired: 'noted that an invitation expired unused',
  wraps_read: 'fetched the keys that open this case on their device',
  log_read: 'read the list of who is in this case',
  key_backup_stored: 'backed up their keys for this case',
  key_backup_read: 'restored their keys for this case from a backup',
  upload_expired: 'discarded an unfinished upload',
  audit_viewed: 'looked at this access list',
  audit_exported: 'exported the audit trail',
  access_denied: 'was refused access',
};

class AlreadyIn extends Error {}

class Room {
  constructor(ctx, caseId) {
    this.ctx = ctx;
    this.me = ctx.userId;
    this.device = ctx.device;
    this.caseId = caseId;
    this.recall = new RecallView(this); // recall.js: the action, recalled frames, tombstones
    this.session = null; // CaseSession, made in start() with the pin store as its trust hook
    this.pins = null;
    this.socket = null;
    this.queue = Promise.resolve();
    this.shownUpTo = 0; // highest server seq processed
    this.items = new Map(); // seq -> li
    this.pending = new Map(); // client_msg_id hex -> li (own, sent, not yet seen back)
    this.readMarks = new Map(); // user -> up_to
    // Per recipient: delivered, read, acknowledged; only users of the verified roster.
    this.receipts = new Receipts(ctx.userId, { inRoster: (u) => Boolean(this.session?.roster?.user(u)) });
    this.deliveredReport = new DeliveredReporter((frame) => this.socket?.post(frame) ?? false);
    this.presence = new Map(); // user -> last signal ms
    this.typing = new Map(); // user -> timer
    this.lastReadSent = 0;
    this.readTimer = null;
    this.typingSentAt = 0;
    this.typingStopTimer = null;
    this.detail = null;
    this.closed = false;
    this.helloCount = 0;
    this.serverUrgent = new Set(); // seqs the sender flagged urgent to the server
    this.urgentAcks = new Map(); // seq -> Map(user -> at)
    this.urgentOwed = new Map(); // seq -> [user] who can read it and have not acknowledged
    this.escalation = new EscalationView(this); // reminders and escalations (escalation-view.js)
    this.leaving = new Set(); // users whose leave request this device is committing
  }

  // --- helpers -----------------------------------------------------------------

  error(err) {
    if (err?.code === 'own_identity_mismatch') {
      this.failClosed(err);
      return;
    }
    say($('#room-error'), errorText(err), 'error');
  }

  /** The roster lists this user under an identity key that is not this device's:
   * someone else could read as "you". Nothing of the case is shown or sent. */
  failClosed() {
    this.closed = true;
    this.socket?.close();
    replace($('#messages'));
    $('.room').hidden = true;
    say($('#room-fatal'), 'Security problem: this case lists you under an identity key that is not yours, so someone '
      + 'else may be reading as you. The case is not shown and nothing can be sent from this browser. '
      + 'Tell your administrator and do not use this case until it is resolved.', 'error');
  }

  enqueue(fn) {
    this.queue = this.queue.then(fn).catch((err) => this.error(err));
    return this.queue;
  }

  myRole() {
    return this.session.roster?.user(this.me)?.role ?? null;
  }

  isManager() {
    const r = this.myRole();
    return r === Role.OWNER || r === Role.ADMIN;
  }

  // --- start -------------------------------------------------------------------

  async start() {
    this.wireComposer();
    this.wireImages();
    this.wireMembers();
    this.wireViewer();
    this.wireInvite();
    this.wireLeave();
    onSessionEnd(() => { this.closed = true; this.socket?.close(); });
    this.wireAccessLog();
    wireExport(this); // built here after decryption, never uploaded
    if (this.ctx.role === 'patient') {
      restrictLookups(this.me);
      await this.loadAccessLog(false);
    }
    this.pins = await PinStore.open(this.device);
    this.session = new CaseSession(this.caseId, this.device, { trust: this.pins, backup: true });
    this.session.onBackupError = (err) => say($('#members-status'), `The key backup could not be used: ${errorText(err)}`, 'error');
    this.trust = new TrustView(this);
    this.admissions = new AdmissionView(this);
    this.pins.onChange(() => { if (!this.closed) this.trust.renderBanner().catch((err) => this.error(err)); });
    this.pins.onSyncError((err) => say($('#members-status'), `Your identity pins could not be synced: ${errorText(err)}`, 'error'));
    // Awaited: a decision made on another device (a verified key, an accepted change)
    // must be in the book before any roster of this case is checked or observed.
    try {
      await this.pins.syncNow();
    } catch (err) {
      this.pins.syncFailed(err);
    }
    await this.refreshDetail();
    try {
      await this.session.sync();
    } catch (err) {
      if (err?.code === 'own_identity_mismatch') {
        this.failClosed(err);
        return;
      }
      throw err;
    }
    await this.renderMembers();
    if (!this.session.roster.device(this.device.deviceId)) {
      if (!this.session.roster.user(this.me)) {
        this.onFinal(4403);
        return;
      }
      // This user is in the case but this browser is not yet: its identity key enrols it.
      if (!(await this.enrolHere())) return;
    }
    await this.syncOwnDevices();
    await this.loadUrgent();
    this.escalation.renderPanel().catch((err) => this.escalation.panelError(err));
    await this.loadReceipts();
    this.consult = new ConsultView(this); // the consult record: cards, report form, time
    this.consult.start();
    this.socket = new RoomSocket(this.caseId, this.device, {
      onFrame: (frame) => this.enqueue(() => this.onFrame(frame)),
      onState: (state) => this.onSocketState(state),
      onFinal: (code) => this.onFinal(code),
    });
    this.socket.connect();
    document.addEventListener('visibilitychange', () => this.scheduleRead());
  }

  /** After this device changed the membership: fresh detail and member list. */
  async afterMembership() {
    await this.refreshDetail();
    await this.renderMembers();
  }

  async refreshDetail() {
    this.detail = await api('GET', `/api/cases/${this.caseId}`);
    const d = this.detail;
    $('#room-title').textContent = `${d.id.slice(0, 8)}${d.specialty ? ` · ${d.specialty}` : ''}`;
    replace($('#room-meta'),
      h('span', { class: `badge ${d.urgency}` }, d.urgency[0].toUpperCase() + d.urgency.slice(1)),
      ` Status: ${d.status} · opened ${fmtDate(d.opened_at)}`, retentionNote(d.retention));
    document.title = `Case ${d.id.slice(0, 8)} · collab`;
    this.renderStatus();
  }

  onSocketState(state) {
    const text = { connecting: 'Connecting…', open: 'Connected', reconnecting: 'Connection lost: reconnecting…', closed: 'Disconnected' }[state];
    const el = $('#conn-state');
    el.textContent = text;
    el.className = `conn ${state}`;
  }

  /** enrol_device: this browser's identity key (UIK) admits this browser into a case
   * its user is in, signed for the next log position; authored by this device. The
   * earlier epochs' keys then come from the key backup. */
  async enrolHere() {
    const status = $('#members-status');
    if (!this.device.uikSeed) {
      this.onFinal('not-yet');
      return false;
    }
    const cert = DeviceCert.fromWire(this.device.cert);
    say(status, 'Adding this browser to the case…');
    try {
      await this.session.commit((head) => {
        if (head.roster.device(cert.deviceId)) throw new AlreadyIn();
        return signEnrol(this.device.uikSeed, this.caseId, BigInt(head.epoch) + 1n, head.entryHash(), cert);
      });
    } catch (err) {
      if (err?.code === 'revoked_device_in_roster') {
        // Only a device already in the case can remove a revoked one (its user's other
        // devices, or an owner or admin), and the server refuses the enrolment until then.
        this.onFinal('revoked-first');
        return false;
      }
      if (!(err instanceof AlreadyIn)) {
        this.onFinal('not-yet', err);
        return false;
      }
    }
    say(status, '');
    await this.afterMembership();
    if (!this.session.roster.device(this.device.deviceId)) {
      this.onFinal('not-yet');
      return false;
    }
    return true;
  }

  /**
   * Revoked devices leave the case: the server lists them (detail.revoked_devices); this
   * device commits remove_device for each one it may remove (its user's own, or any as a
   * manager) before any other entry. Other devices of this user are not added from here:
   * each new device enrols itself (enrolHere).
   */
  async syncOwnDevices() {
    for (const id of this.detail?.revoked_devices ?? []) this.session.revoked.add(id);
    const { devices } = await api('GET', '/api/devices');
    for (const d of devices) if (d.revoked_at) this.session.revoked.add(d.device_id);
    if (this.closed || !this.session.removableRevoked().length) return;
    const status = $('#members-status');
    say(status, 'Removing revoked devices from this case…');
    try {
      await this.session.removeRevoked();
      say(status, '');
    } catch (err) {
      say(status, errorText(err), 'error');
    }
    await this.refreshDetail();
    await this.renderMembers();
  }

  onFinal(code, err = null) {
    this.closed = true;
    const why = code === 'not-yet'
      ? `This browser could not be added to this case${err ? ` (${errorText(err)})` : ''}. Reload to try again.`
      : code === 'revoked-first'
      ? 'This browser cannot join this case yet: a revoked device is still in it. It is removed the next time one of '
        + 'your other devices, or an owner or admin of the case, opens the case; then reload this page.'
      : code === 4403
      ? 'This device is no longer in this case (it was removed from the case or revoked).'
      : code === 4404 ? 'This case does not exist.' : 'The case room refused this connection.';
    say($('#room-error'), why, 'error');
    for (const el of [$('#msg-text'), $('#send-btn'), $('#img-send'), $('#img-file')]) el.disabled = true;
  }

  // --- frames ------------------------------------------------------------------

  async onFrame(frame) {
    switch (frame.type) {
      case 'hello':
        if (frame.resync === true) {
          await this.resync(frame);
          break;
        }
        this.socket.post({ type: 'typing', active: false }); // presence: "I am here"
        await this.catchUp();
        if (this.helloCount) await this.loadReceipts(); // marks that moved while away
        if (this.helloCount++) await this.syncOwnDevices(); // after a reconnect
        await this.commitPending();
        break;
      case 'message':
        if (!Number.isInteger(frame.seq) || frame.seq <= this.shownUpTo) return;
        if (frame.seq > this.shownUpTo + 1) await this.catchUp();
        if (frame.seq <= this.shownUpTo) return;
        await this.show(frame);
        break;
      case 'recalled':
        this.recall.onFrame(frame);
        break;
      case 'log': {
        const before = new Set(this.session.keys.keys());
        const oldHead = Number(this.session.head.epoch);
        await this.session.sync();
        await this.refreshDetail();
        await this.renderMembers();
        await this.loadReceipts(); // who the recipients are now
        // Earlier epochs shared with this device (share_history): show their messages.
        if ([...this.session.keys.keys()].some((ep) => !before.has(ep) && ep < oldHead)) await this.reloadAll();
        break;
      }
      case 'join_request':
        // Only a listing to review: never admitted without a click in the dialog.
        await this.refreshDetail();
        await this.admissions.render();
        break;
      case 'join_resolved':
        await this.refreshDetail();
        this.admissions.resolved(frame);
        await this.admissions.render();
        break;
      case 'leave_request':
        // Signed by the leaving member's device: committing it needs no one's decision.
        await this.refreshDetail();
        await this.admissions.render();
        await this.commitPending();
        break;
      case 'status':
        this.seen(frame.by);
        await this.refreshDetail();
        break;
      case 'urgent_ack':
        this.seen(frame.user);
        this.noteAck(frame.seq, frame.user, frame.at);
        break;
      case 'urgent_reminder':
      case 'urgent_escalated':
        this.escalation.onFrame(frame);
        break;
      case 'typing':
        this.seen(frame.user);
        if (frame.user !== this.me) this.showTyping(frame.user, frame.active);
        break;
      case 'read':
        this.seen(frame.user);
        this.receipts.noteRead(frame.user, frame.up_to);
        if (Number.isInteger(frame.up_to) && frame.up_to > (this.readMarks.get(frame.user) ?? 0)) {
          this.readMarks.set(frame.user, frame.up_to);
          this.updateReceipts();
        }
        break;
      case 'delivered':
        if (this.receipts.noteDelivered(frame.user, frame.up_to, frame.at)) this.updateReceipts();
        break;
      case 'error':
        if (frame.code === 'removed' || frame.code === 'device_revoked') this.closed = true;
        // unavailable / too_slow precede a 4503 / 4507 close: the socket reconnects and
        // resumes by itself ("Connection lost: reconnecting…"), nothing for the user to do.
        if (!TRANSIENT_ERRORS.has(frame.code)) say($('#room-error'), frame.message || frame.code, 'error');
        break;
      default:
        break; // pong, notify, ...
    }
  }

  /** The server's channel layer was down and is back (a resync hello on an open
   * socket): frames published meanwhile never came. Resume when the server holds
   * messages beyond ours, re-read the log when its head moved, and refresh the case
   * detail (join and leave requests, status). */
  async resync(frame) {
    if (!Number.isInteger(frame.last_seq) || frame.last_seq > this.shownUpTo) await this.catchUp();
    if (!Number.isInteger(frame.head_epoch) || frame.head_epoch > Number(this.session.head.epoch)) {
      await this.onFrame({ type: 'log' });
    } else {
      await this.refreshDetail();
    }
    await this.admissions.render();
    await this.commitPending();
  }

  /** Fetch everything after what we have shown, page by page. Pages are capped by
   * count and by bytes: `more` says whether anything follows the page's last seq. */
  async catchUp() {
    let after = this.shownUpTo;
    for (;;) {
      const page = await this.socket.request({ type: 'resume', after, limit: RESUME_PAGE });
      if (page.type === 'error') throw new Error(page.message || page.code);
      const items = Array.isArray(page.items) ? page.items : [];
      for (const item of items) {
        if (item.seq > this.shownUpTo) await this.show(item);
      }
      const last = items.length ? items[items.length - 1].seq : null;
      // A page always holds a message when one exists; one that does not move forward
      // would loop for ever, so it ends the catch-up too.
      if (page.more !== true || !Number.isInteger(last) || last <= after) break;
      after = last;
    }
    this.renderPresence();
  }

  async show(item) {
    if (this.recall.onItem(item)) return; // a removed message: its one line, no content
    if (item.urgent === true) {
      this.serverUrgent.add(item.seq);
      this.refreshUrgentSoon();
    }
    let opened;
    try {
      opened = await this.session.open(item);
    } catch (err) {
      this.shownUpTo = Math.max(this.shownUpTo, item.seq);
      if (err instanceof UnavailableMessage) {
        const li = h('li', { class: 'message unavailable', dataset: { seq: String(item.seq) } },
          h('p', { class: 'msg-head' }, h('span', { class: 'sender' }, knownName(err.header.senderUserId)), ' ',
            h('time', { datetime: new Date(err.header.sentMs).toISOString() }, fmtTime(err.header.sentMs))),
          h('p', { class: 'meta' }, 'Message not available on this device (the key in the entry by ',
            h('span', { class: 'author' }, knownName(err.author)), ' could not be opened).'));
        nameOf(err.author).then((n) => { li.querySelector('.author').textContent = n; });
        nameOf(err.header.senderUserId).then((n) => { li.querySelector('.sender').textContent = n; });
        this.insert(li);
        return;
      }
      this.insert(h('li', { class: 'message invalid', dataset: { seq: String(item.seq) } },
        h('p', {}, `Message #${item.seq} failed a security check (${err.code ?? err.message}) and is not shown.`)));
      return;
    }
    this.shownUpTo = Math.max(this.shownUpTo, item.seq);
    if (!opened.isNew) return;
    const { msg } = opened;
    const sender = msg.header.senderUserId;
    this.seen(sender, msg.header.sentMs);
    if (msg.gap) {
      const n = Number(msg.gap.lastMissing) - Number(msg.gap.firstMissing) + 1;
      this.insert(h('li', { class: 'gap', role: 'note' },
        `Missing messages: ${n} message${n === 1 ? '' : 's'} from ${await nameOf(sender)} never arrived here. `
        + 'The server may have dropped or withheld them.'));
    }
    await this.render(msg);
    if (sender !== this.me) {
      this.showTyping(sender, false);
      this.scheduleRead();
      this.deliveredReport.note(msg.seq);
    }
  }

  // --- messages ----------------------------------------------------------------

  /** Start over from seq 0 (after earlier epochs became readable), in order. */
  async reloadAll() {
    replace($('#messages'), ...$('#messages').querySelectorAll('li.pending'));
    this.items.clear();
    this.consult?.reset();
    this.session.replay = new ReplayGuard();
    this.session.seen.clear();
    this.shownUpTo = 0;
    await this.catchUp();
    say($('#members-status'), 'Earlier messages were shared with you and are now shown.');
  }

  insert(li) {
    const list = $('#messages');
    const firstPending = list.querySelector('li.pending');
    list.insertBefore(li, firstPending);
    if (list.scrollHeight - list.scrollTop - list.clientHeight < 400) list.scrollTop = list.scrollHeight;
  }

  async render(msg) {
    if (this.consult?.take(msg)) return; // consult_request, consult_report, time_entry
    const { header, body } = msg;
    const own = header.senderUserId === this.me;
    const cmid = toHex(header.clientMsgId);
    let li = own ? this.pending.get(cmid) : null;
    this.pending.delete(cmid);
    if (li) {
      li.remove();
      li.classList.remove('pending');
    } else {
      li = this.messageItem(header.senderUserId, body, header.sentMs, own);
    }
    await this.fillMessage(li, msg);
    li.dataset.seq = String(msg.seq);
    this.items.set(msg.seq, li);
    this.insert(li);
    if (own) this.updateReceipt(li, msg.seq);
    if (own) this.recall.decorate(li, msg);
  }

  messageItem(senderId, body, sentMs, own) {
    const urgent = body?.priority === 'urgent';
    const li = h('li', { class: `message${own ? ' own' : ''}${urgent ? ' urgent' : ''}` });
    const who = h('span', { class: 'sender' }, own ? 'You' : knownName(senderId));
    if (!own) nameOf(senderId).then((n) => { who.textContent = n; });
    li.append(h('p', { class: 'msg-head' },
      who, ' ', h('time', { datetime: new Date(sentMs).toISOString() }, fmtTime(sentMs)),
      urgent ? h('span', { class: 'badge urgent' }, 'Urgent') : null));
    const text = typeof body?.text === 'string' ? body.text : '';
    if (text) li.append(h('p', { class: 'text' }, text));
    if (own) li.append(h('p', { class: 'receipt', 'aria-live': 'off' }, 'Sending…'));
    return li;
  }

  async fillMessage(li, msg) {
    const { body, manifests } = msg;
    const image = body?.image;
    if (image && typeof image === 'object') {
      const full = manifests[image.full];
      const thumb = manifests[image.thumbnail];
      if (full) li.insertBefore(describeMarked(this.imageFigure(full, thumb), image, manifests, (m) => this.openViewer(m)), li.querySelector('.receipt'));
    } else if (manifests.length) {
      for (const m of manifests) li.insertBefore(this.attachmentLink(m), li.querySelector('.receipt'));
    }
    if (this.serverUrgent.has(msg.seq)) {
      li.classList.add('urgent');
      if (!li.querySelector('.msg-head .badge')) li.querySelector('.msg-head').append(h('span', { class: 'badge urgent' }, 'Urgent'));
      li.append(h('p', { class: 'acks', title: SERVER_REPORTED }));
      if (msg.header.senderUserId !== this.me) {
        li.append(h('button', { type: 'button', class: 'ack-btn', onclick: (ev) => this.acknowledge(msg.seq, ev.currentTarget) }, 'Acknowledge'));
      }
      this.renderAcks(msg.seq, li);
    }
  }

  // --- urgent acknowledgements ---------------------------------------------------

  async loadUrgent() {
    const { messages } = await api('GET', `/api/cases/${this.caseId}/urgent`);
    for (const m of messages) {
      this.serverUrgent.add(m.seq);
      this.urgentOwed.set(m.seq, m.unacknowledged);
      for (const a of m.acknowledged) this.noteAck(m.seq, a.user, a.at);
      this.renderAcks(m.seq);
    }
    this.escalation.load(messages);
  }

  /** Who still owes an acknowledgement changes with new urgent messages and members. */
  refreshUrgentSoon() {
    clearTimeout(this.urgentTimer);
    this.urgentTimer = setTimeout(() => {
      // A verified roster without me: removed, and the server would answer 403.
      const roster = this.session?.roster;
      if (this.closed || (roster && !roster.user(this.me))) return;
      this.loadUrgent().catch(() => {});
    }, 500);
  }

  noteAck(seq, user, at) {
    if (!this.urgentAcks.has(seq)) this.urgentAcks.set(seq, new Map());
    this.urgentAcks.get(seq).set(user, at);
    this.renderAcks(seq);
    const li = this.items.get(seq);
    if (this.receipts.noteAck(seq, user, at) && li) this.updateReceipt(li, seq);
  }

  renderAcks(seq, li = this.items.get(seq)) {
    const el = li?.querySelector('.acks');
    if (!el) return;
    // The server's word (unsigned): only users of the verified roster are named (receipts.js).
    const inRoster = (u) => Boolean(this.session?.roster?.user(u));
    const acks = verifiedAcks(this.urgentAcks.get(seq), inRoster);
    const names = [...acks.entries()].map(([user, at]) => `${user === this.me ? 'you' : knownName(user)} (${fmtTime(Date.parse(at))})`);
    const owed = (this.urgentOwed.get(seq) ?? []).filter((u) => !acks.has(u) && inRoster(u)).map(knownName);
    const parts = [];
    if (names.length) parts.push(`Acknowledged by ${names.join(', ')}`);
    if (owed.length) parts.push(`Waiting for acknowledgement from ${owed.join(', ')}`);
    el.textContent = parts.length ? parts.join('. ') : (this.urgentOwed.has(seq) ? 'No one else can read this message yet' : 'Waiting for acknowledgement');
    el.classList.toggle('owed', owed.length > 0 || (!names.length && !this.urgentOwed.has(seq)));
    const button = li.querySelector('.ack-btn');
    if (button && acks.has(this.me)) button.remove();
    this.escalation?.render(seq, li);
  }

  imageFigure(full, thumb) {
    const img = h('img', { class: 'thumb', alt: 'Clinical image (thumbnail); loading…', width: thumb?.width || 160, height: thumb?.height || 120 });
    const button = h('button', { type: 'button', class: 'thumb-btn', onclick: () => this.openViewer(full) },
      img, h('span', { class: 'visually-hidden' }, 'View full size'));
    const fig = h('figure', { class: 'image' }, button,
      h('figcaption', {}, `Image ${full.width}×${full.height}, ${(full.size / 1024).toFixed(0)} KB · `,
        h('button', { type: 'button', class: 'link', onclick: () => this.openViewer(full) }, 'View full size')));
    if (thumb) {
      downloadAttachment(thumb, this.device.deviceId).then((bytes) => {
        const url = URL.createObjectURL(new Blob([bytes], { type: IMAGE_TYPES.has(thumb.mime) ? thumb.mime : 'application/octet-stream' }));
        img.addEventListener('load', () => URL.revokeObjectURL(url), { once: true });
        img.addEventListener('error', () => URL.revokeObjectURL(url), { once: true });
        img.alt = 'Clinical image (thumbnail). Activate to view full size.';
        img.src = url;
      }).catch((err) => { img.alt = `Thumbnail could not be loaded (${err.code ?? err.message})`; });
    }
    return fig;
  }

  attachmentLink(m) {
    return h('p', { class: 'attachment' },
      h('button', { type: 'button', class: 'link', onclick: () => this.openViewer(m) },
        `Attachment (${m.mime || 'file'}, ${(m.size / 1024).toFixed(0)} KB)`));
  }

  updateReceipt(li, seq) {
    const receipt = li.querySelector('.receipt');
    if (!receipt) return;
    // Per recipient: acknowledged, read, delivered or not yet (receipts.js).
    receipt.textContent = this.receipts.summary(seq, knownName);
    receipt.title = SERVER_REPORTED;
    receipt.classList.toggle('read', this.receipts.byState(seq).read.length > 0);
  }

  /** Every member's stored marks (on opening and after a reconnect or a roster change). */
  async loadReceipts() {
    try {
      this.receipts.load(await api('GET', `/api/cases/${this.caseId}/receipts`, { device: this.device.deviceId }));
    } catch (err) {
      say($('#members-status'), `Receipts could not be loaded: ${errorText(err)}`, 'error');
      return;
    }
    this.updateReceipts();
  }

  updateReceipts() {
    for (const [seq, li] of this.items) if (li.classList.contains('own')) this.updateReceipt(li, seq);
  }

  scheduleRead() {
    if (document.visibilityState !== 'visible' || this.shownUpTo <= this.lastReadSent) return;
    clearTimeout(this.readTimer);
    this.readTimer = setTimeout(() => {
      const upTo = this.shownUpTo;
      if (upTo > this.lastReadSent && this.socket?.post({ type: 'read', up_to: upTo })) this.lastReadSent = upTo;
    }, 400);
  }

  // --- typing and presence -------------------------------------------------------

  seen(user, at = Date.now()) {
    if (!user) return;
    this.presence.set(user, Math.max(this.presence.get(user) ?? 0, Math.min(at, Date.now())));
    this.renderPresence();
  }

  showTyping(user, active) {
    clearTimeout(this.typing.get(user));
    this.typing.delete(user);
    if (active) this.typing.set(user, setTimeout(() => { this.typing.delete(user); this.renderTyping(); }, TYPING_SHOW_MS));
    this.renderTyping();
  }

  renderTyping() {
    const names = [...this.typing.keys()].map(knownName);
    $('#typing').textContent = names.length ? `${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} typing…` : '';
  }

  renderPresence() {
    const now = Date.now();
    for (const el of document.querySelectorAll('#members [data-presence]')) {
      const user = el.dataset.presence;
      const at = user === this.me ? now : this.presence.get(user);
      if (at && now - at < ONLINE_MS) {
        el.textContent = 'Active now';
        el.className = 'presence online';
      } else {
        el.textContent = at ? `Last active ${fmtTime(at)}` : '';
        el.className = 'presence';
      }
    }
  }

  // --- composer ----------------------------------------------------------------

  wireComposer() {
    const text = $('#msg-text');
    $('#composer').addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.sendText();
    });
    text.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        this.sendText();
      }
    });
    text.addEventListener('input', () => {
      const now = Date.now();
      if (now - this.typingSentAt > 3000 && text.value) {
        if (this.socket?.post({ type: 'typing', active: true })) this.typingSentAt = now;
      }
      clearTimeout(this.typingStopTimer);
      this.typingStopTimer = setTimeout(() => this.stopTyping(), 4000);
    });
  }

  stopTyping() {
    clearTimeout(this.typingStopTimer);
    if (this.typingSentAt) {
      this.socket?.post({ type: 'typing', active: false });
      this.typingSentAt = 0;
    }
  }

  /** Show an own message at once ("Sending…"); on the server's ack its receipt line. */
  async deliver(body, contentType = 'text', attachments = []) {
    const blocked = this.trust.sendBlocker();
    if (blocked) {
      await this.trust.renderBanner();
      throw blocked;
    }
    if (this.session.headKeyMissing) {
      // This device could not open the current key: a fresh one first, then the message.
      say($('#members-status'), 'Changing the case key: this device could not open the current one…');
      await this.session.ensureHeadKey();
      say($('#members-status'), '');
    }
    const li = this.messageItem(this.me, body, Date.now(), true);
    li.classList.add('pending');
    $('#messages').append(li);
    $('#messages').scrollTop = $('#messages').scrollHeight;
    try {
      const urgent = body.priority === 'urgent';
      const { ack, envelope } = await sendMessage(this.socket, this.session, body, contentType, attachments, { urgent });
      if (urgent) this.serverUrgent.add(ack.seq);
      const cmid = toHex(envelope.header.clientMsgId);
      if (this.items.has(ack.seq)) {
        li.remove(); // already shown from the live frame
      } else {
        this.pending.set(cmid, li);
        li.dataset.seq = String(ack.seq);
        // The line the live frame would give it: the same whichever comes first.
        this.updateReceipt(li, ack.seq);
      }
      return ack;
    } catch (err) {
      li.querySelector('.receipt').textContent = `Not sent: ${errorText(err)}`;
      li.classList.add('failed');
      // Sealing is checked on every attempt: a retry after the log moved may find a
      // changed key in the new roster; the banner then says whose.
      if (err instanceof TrustError) await this.trust.renderBanner().catch(() => {});
      throw err;
    }
  }

  async sendText() {
    const input = $('#msg-text');
    const text = input.value.trim();
    if (!text || this.closed) return;
    if (!this.socket?.open) {
      this.error(new Error('Not connected; wait for the connection to come back, then send again.'));
      return;
    }
    const urgent = $('#msg-urgent').checked;
    input.value = '';
    $('#msg-urgent').checked = false;
    this.stopTyping();
    const body = { text };
    if (urgent) body.priority = 'urgent';
    try {
      await this.deliver(body);
    } catch (err) {
      this.error(err);
      if (!input.value) input.value = text;
    }
  }

  async acknowledge(seq, button) {
    button.disabled = true;
    try {
      const answer = await this.socket.request({ type: 'ack_urgent', seq });
      if (answer.type === 'error') throw new Error(answer.message || answer.code);
      this.noteAck(answer.seq, answer.user, answer.at);
    } catch (err) {
      button.disabled = false;
      this.error(err);
    }
  }

  // --- images ------------------------------------------------------------------

  wireImages() {
    // The marking editor opens when a picture is chosen (markup-view.js); Cancel forgets it.
    this.markup = new MarkupView({ onCancel: () => { $('#img-file').value = ''; } });
    $('#img-file').addEventListener('change', () => {
      this.markup.open($('#img-file').files?.[0]).catch((err) => say($('#img-status'), errorText(err), 'error'));
    });
    $('#img-send').addEventListener('click', () => this.sendImage());
  }

  async sendImage() {
    const file = $('#img-file').files?.[0];
    const status = $('#img-status');
    const progress = $('#img-progress');
    if (!file) {
      say(status, 'Choose an image first.', 'error');
      $('#img-file').focus();
      return;
    }
    if (!this.socket?.open) {
      say(status, 'Not connected; try again when the connection is back.', 'error');
      return;
    }
    const button = $('#img-send');
    button.disabled = true;
    progress.hidden = false;
    progress.value = 0;
    try {
      say(status, 'Removing hidden details from the image…');
      const { clean, original, fields } = this.markup ? await this.markup.prepare(file) : { clean: await sanitiseImage(file), fields: {} };
      say(status, 'Encrypting and uploading…');
      const total = clean.full.bytes.length + clean.thumbnail.bytes.length;
      const full = await uploadAttachment(this.caseId, this.device.deviceId, clean.full, (done) => {
        progress.value = Math.round((done / total) * 100);
      });
      const thumb = await uploadAttachment(this.caseId, this.device.deviceId, clean.thumbnail, (done) => {
        progress.value = Math.round(((clean.full.bytes.length + done) / total) * 100);
      });
      const extra = original ? [await uploadAttachment(this.caseId, this.device.deviceId, original.full)] : [];
      progress.value = 100;
      const caption = $('#img-caption').value.trim();
      const uploads = [full, thumb, ...extra];
      const body = { text: caption, attachments: uploads.map((u) => u.toWire()), image: { full: 0, thumbnail: 1, ...fields } };
      await this.deliver(body, 'image', uploads.map((u) => new AttachmentRef(u.blobId, u.root)));
      say(status, 'Image sent.');
      $('#img-file').value = '';
      this.markup?.close();
      $('#img-caption').value = '';
    } catch (err) {
      say(status, errorText(err), 'error');
    } finally {
      button.disabled = false;
      setTimeout(() => { progress.hidden = true; }, 1500);
    }
  }

  wireViewer() {
    const dialog = $('#viewer');
    $('#viewer-close').addEventListener('click', () => {
      this.clearViewer();
      dialog.close();
    });
    dialog.addEventListener('close', () => this.clearViewer()); // Esc closes too
  }

  /** Forget the decrypted image: revoke its Blob URL and drop every reference. */
  clearViewer() {
    const img = $('#viewer-img');
    const save = $('#viewer-save');
    if (this.viewerUrl) URL.revokeObjectURL(this.viewerUrl);
    this.viewerUrl = null;
    img.removeAttribute('src');
    img.hidden = true;
    save.removeAttribute('href');
    save.hidden = true;
    this.viewerToken = null;
  }

  /** Download, verify and decrypt in memory; show from a Blob URL revoked on close. */
  async openViewer(manifest) {
    const dialog = $('#viewer');
    const progress = $('#viewer-progress');
    const status = $('#viewer-status');
    const token = {};
    this.viewerToken = token;
    progress.value = 0;
    progress.hidden = false;
    status.textContent = 'Downloading and decrypting…';
    if (!dialog.open) dialog.showModal();
    try {
      const bytes = await downloadAttachment(manifest, this.device.deviceId, (done, total) => {
        progress.value = Math.round((done / total) * 100);
      });
      if (this.viewerToken !== token) return;
      const isImage = IMAGE_TYPES.has(manifest.mime);
      const url = URL.createObjectURL(new Blob([bytes], { type: isImage ? manifest.mime : 'application/octet-stream' }));
      this.viewerUrl = url;
      const save = $('#viewer-save');
      save.href = url;
      save.download = isImage ? `clinical-image.${manifest.mime.split('/')[1].replace('jpeg', 'jpg')}` : 'attachment.bin';
      save.hidden = false;
      if (isImage) {
        const img = $('#viewer-img');
        img.alt = `Clinical image, ${manifest.width}×${manifest.height}`;
        img.src = url;
        img.hidden = false;
      }
      progress.hidden = true;
      status.textContent = 'Verified and decrypted on this device.';
      $('#viewer-close').focus();
    } catch (err) {
      status.textContent = `Could not open the attachment: ${errorText(err)}`;
    }
  }

  // --- consult status --------------------------------------------------------------

  renderStatus() {
    const d = this.detail;
    if (!d) return;
    const labels = { requested: 'Requested', accepted: 'Accepted', answered: 'Answered', closed: 'Closed' };
    const last = (d.status_history ?? []).at(-1);
    replace($('#status-text'), h('strong', {}, labels[d.status] ?? d.status),
      last ? h('span', { class: 'meta' }, ` since ${fmtDate(last.at)}`) : null);
    const inCase = Boolean(this.session.roster?.user(this.me));
    const consultant = inCase && this.ctx.role === 'provider' && d.opened_by !== this.me;
    const owner = this.myRole() === Role.OWNER;
    const actions = [];
    const action = (label, status) => h('button', { type: 'button', onclick: (ev) => this.setStatus(status, ev.currentTarget) }, label);
    if (consultant && d.status === 'requested') actions.push(action('Accept consult', 'accepted'));
    if (consultant && d.status === 'accepted') actions.push(action('Mark answered', 'answered'));
    if (owner && d.status !== 'closed') actions.push(action('Close case', 'closed'));
    if (owner && d.status === 'closed') actions.push(action('Reopen', 'requested'));
    replace($('#status-actions'), ...actions);
  }

  async setStatus(status, button) {
    button.disabled = true;
    try {
      await api('POST', `/api/cases/${this.caseId}/status`, { json: { status } });
      await this.refreshDetail();
      say($('#status-msg'), '');
    } catch (err) {
      button.disabled = false;
      say($('#status-msg'), errorText(err), 'error');
    }
  }

  // --- join and leave requests, committed by this device --------------------------

  /** Commit signed leave requests (any member): the server only records them; a
   * member's device signs the entry. Join requests are never committed here: only
   * the admission dialog (admission-view.js) adds anyone, after a click. */
  async commitPending({ force = false } = {}) {
    if (this.closed || !this.session.roster?.device(this.device.deviceId)) return;
    const d = this.detail ?? {};
    for (const r of d.leave_requests ?? []) {
      if (r.user === this.me || this.leaving.has(r.id) || !this.session.roster.user(r.user)) continue;
      this.leaving.add(r.id);
      if (!this.isManager() && !force) {
        // Let a manager's device commit it first (one entry wins the compare-and-swap;
        // fewer racing devices, fewer rebuilt entries); step in if nobody did.
        setTimeout(() => this.enqueue(async () => {
          if (this.closed) return;
          await this.refreshDetail();
          if ((this.detail.leave_requests ?? []).some((x) => x.id === r.id)) {
            this.leaving.delete(r.id);
            await this.commitPending({ force: true });
          }
        }), 10_000);
        continue;
      }
      const name = await nameOf(r.user);
      try {
        await this.session.commit((head) => {
          if (!head.roster.user(r.user)) throw new Error(`${name} has already left.`);
          return new RemoveUserBody(r.user, new LeaveRequest(r.device, r.epoch, b64d(r.signature, 64)));
        }, { background: true }); // the page commits it by itself: not this person's action
        say($('#members-status'), `${name} left the case; the case key was changed.`);
      } catch (err) {
        say($('#members-status'), `${name}'s request to leave could not be committed: ${errorText(err)}`, 'error');
      }
    }
    await this.refreshDetail();
    await this.renderMembers();
  }

  // --- patient invitation -------------------------------------------------------------

  wireInvite() {
    $('#invite-btn').addEventListener('click', async (ev) => {
      const button = ev.currentTarget;
      button.disabled = true;
      try {
        const { link, expiresAt } = await createInvitation(this.device, this.caseId);
        $('#invite-link').value = link;
        // Drawn here from the full link (with its fragment), as pixels on a canvas.
        drawQr($('#invite-qr'), link, 220);
        $('#invite-expiry').textContent = `Single use; expires ${fmtDate(expiresAt)}. This link is not shown again.`;
        $('#invite-out').hidden = false;
        button.textContent = 'Create another link';
        $('#invite-link').focus();
        $('#invite-link').select();
      } catch (err) {
        say($('#invite-status'), errorText(err), 'error');
      } finally {
        button.disabled = false;
      }
    });
  }

  // --- leaving ---------------------------------------------------------------------------

  wireLeave() {
    const box = $('#leave-actions');
    const ask = $('#leave-btn');
    ask.addEventListener('click', () => {
      replace(box,
        h('button', { type: 'button', class: 'danger', onclick: (ev) => this.leave(ev.currentTarget) }, 'Confirm: leave this case'),
        ' ',
        h('button', { type: 'button', onclick: () => { replace(box, ask); ask.focus(); } }, 'Cancel'));
      box.querySelector('button').focus();
    });
  }

  async leave(button) {
    button.disabled = true;
    try {
      const head = this.session.head;
      const req = await signLeave(this.device.signer, this.caseId, this.me, this.device.deviceId, head.epoch);
      await api('POST', `/api/cases/${this.caseId}/leave`, {
        json: { device: req.deviceId, epoch: Number(req.epoch), signature: b64e(req.signature) },
      });
      say($('#leave-status'), 'Your request to leave was sent. Another member\'s device will remove you from the case.');
      replace($('#leave-actions'));
    } catch (err) {
      button.disabled = false;
      say($('#leave-status'), errorText(err), 'error');
    }
  }

  // --- access log ------------------------------------------------------------------

  wireAccessLog() {
    this.accessPage = 1;
    $('#access-details').addEventListener('toggle', (ev) => {
      if (ev.currentTarget.open) this.loadAccessLog(true).catch((err) => this.error(err));
    });
    $('#access-newer').addEventListener('click', () => this.turnAccessPage(-1));
    $('#access-older').addEventListener('click', () => this.turnAccessPage(1));
  }

  turnAccessPage(step) {
    this.accessPage = Math.max(1, this.accessPage + step);
    this.loadAccessLog(true).catch((err) => this.error(err));
  }

  /** Who did what on this case (from the audit trail, newest first, in plain words); also
   * names members for patients. */
  async loadAccessLog(show) {
    const page = show ? this.accessPage : 1;
    const log = await api('GET', `/api/cases/${this.caseId}/access-log?page=${page}`);
    for (const e of log.entries) if (e.actor) addNameHint(e.actor.id, e.actor.display);
    if (!show) return;
    this.accessPage = log.page;
    replace($('#access-log'), ...log.entries.map((e) => this.accessItem(e)));
    const events = log.count === 1 ? '1 event' : `${log.count} events`;
    $('#access-count').textContent = log.count === 0 ? 'Nothing recorded yet.'
      : `${events}, newest first${log.pages > 1 ? ` · page ${log.page} of ${log.pages}` : ''}.`;
    $('#access-pager').hidden = log.pages <= 1;
    $('#access-newer').disabled = log.page <= 1;
    $('#access-older').disabled = log.page >= log.pages;
  }

  accessItem(e) {
    const who = !e.actor ? 'The system' : e.actor.id === this.me ? 'You' : (e.actor.display || 'Someone');
    const words = ACCESS_WORDS[e.action] ?? e.action.replace(/_/g, ' ');
    const refused = e.outcome && e.outcome !== 'success' ? ' (refused)' : '';
    return h('li', { 'data-action': e.action },
      h('strong', {}, who), ` ${words}${refused}`, ' · ',
      h('time', { datetime: e.time, class: 'meta' }, fmtDate(e.time)));
  }

  // --- members -----------------------------------------------------------------

  wireMembers() {
    $('#add-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.search();
    });
  }

  async renderMembers() {
    const roster = this.session.roster;
    if (!roster) return;
    const manager = this.isManager();
    const myRole = this.myRole();
    const revoked = new Set(this.detail?.revoked_devices ?? []);
    const items = await Promise.all(roster.users.map(async (u) => {
      const info = await lookupUser(u.userId);
      const mine = u.userId === this.me;
      const canRemove = manager && !mine && (u.role !== Role.OWNER || myRole === Role.OWNER);
      const devices = roster.devicesOf(u.userId);
      const stale = devices.filter((d) => revoked.has(d.deviceId));
      const actions = [];
      if (!mine) actions.push(h('button', { type: 'button', onclick: () => this.trust.showSafety(u) }, 'Safety number'));
      if (canRemove) actions.push(this.removeButton(u, info.name));
      if (manager && !mine && this.historyFor(u.userId).length) {
        actions.push(h('button', { type: 'button', onclick: (ev) => this.shareHistory(u.userId, info.name, ev.currentTarget) },
          'Share earlier messages'));
      }
      if (stale.length && (manager || mine)) {
        for (const d of stale) {
          actions.push(h('button', { type: 'button', onclick: (ev) => this.removeDevice(u.userId, d.deviceId, ev.currentTarget) },
            `Remove revoked device ${d.deviceId.slice(0, 8)}`));
        }
      }
      return h('li', { dataset: { user: u.userId } },
        h('span', { class: 'member-name' }, mine ? `${info.name} (you)` : info.name),
        h('span', { class: 'meta' }, ` ${ROLE_NAMES[u.role] ?? ''}${info.specialty ? ` · ${info.specialty}` : ''} · ${devices.length} device${devices.length === 1 ? '' : 's'}`),
        mine ? null : [' ', this.trust.badge(u.userId, u.uikPub)],
        h('span', { class: 'presence', dataset: { presence: u.userId } }),
        actions.length ? h('span', { class: 'actions' }, actions) : null);
    }));
    replace($('#members'), ...items);
    const epoch = Number(this.session.head.epoch);
    if (this.serverUrgent.size && epoch !== this.urgentEpoch) this.refreshUrgentSoon();
    this.urgentEpoch = epoch;
    this.renderPresence();
    this.updateReceipts();
    this.escalation.renderAll(); // who is outside the case is the verified roster's answer
    $('#add-section').hidden = !manager || this.ctx.role !== 'provider';
    $('#invite-section').hidden = this.ctx.role !== 'provider' || !roster.user(this.me);
    $('#leave-section').hidden = !roster.user(this.me) || myRole === Role.OWNER;
    this.renderStatus();
    await this.trust.renderBanner();
    await this.admissions.render();
  }

  removeButton(user, name) {
    const wrap = h('span', {});
    const ask = h('button', { type: 'button', class: 'danger' }, 'Remove');
    ask.addEventListener('click', () => {
      replace(wrap,
        h('button', { type: 'button', class: 'danger', onclick: async (ev) => {
          ev.currentTarget.disabled = true;
          await this.removeMember(user.userId, name);
        } }, `Confirm: remove ${name}`),
        h('button', { type: 'button', onclick: () => { replace(wrap, ask); ask.focus(); } }, 'Cancel'));
      wrap.querySelector('button').focus();
    });
    wrap.append(ask);
    return wrap;
  }

  /** [device, epoch, key] for every epoch key this device holds that the user's
   * devices never received (they joined later). */
  historyFor(userId, head = this.session.head) {
    const items = [];
    for (const d of head.roster.devicesOf(userId)) {
      for (const [epoch, key] of this.session.keys) {
        const entry = this.session.chain.get(epoch);
        if (entry && epoch <= Number(head.epoch) && !entry.roster.device(d.deviceId)) items.push([d, epoch, key]);
      }
    }
    return items;
  }

  async shareHistory(userId, name, button) {
    button.disabled = true;
    const status = $('#members-status');
    try {
      say(status, `Sharing earlier messages with ${name}…`);
      await this.session.commit((head) => {
        const items = this.historyFor(userId, head);
        if (!items.length) throw new Error(`${name} already has every earlier message this device can share.`);
        return makeHistoryBody(this.caseId, items);
      });
      say(status, `${name} can now read the earlier messages.`);
      await this.renderMembers();
    } catch (err) {
      button.disabled = false;
      say(status, errorText(err), 'error');
    }
  }

  async removeMember(userId, name) {
    const status = $('#members-status');
    try {
      say(status, `Removing ${name} and rotating the case key…`);
      await this.session.commit((head) => {
        if (!head.roster.user(userId)) throw new Error(`${name} is no longer in this case.`);
        return new RemoveUserBody(userId);
      });
      say(status, `${name} was removed. New messages use a new key they do not have.`);
      await this.refreshDetail();
      await this.renderMembers();
    } catch (err) {
      say(status, errorText(err), 'error');
    }
  }

  async removeDevice(userId, deviceId, button) {
    button.disabled = true;
    const status = $('#members-status');
    try {
      await this.session.commit((head) => new RemoveDeviceBody(userId, deviceId));
      say(status, 'The revoked device was removed and the case key rotated.');
      await this.refreshDetail();
      await this.renderMembers();
    } catch (err) {
      button.disabled = false;
      say(status, errorText(err), 'error');
    }
  }

  async addMember(userId, button, row = null) {
    const status = $('#members-status');
    if (button) button.disabled = true;
    try {
      const { uik, devices, role, name } = checkedKeys(userId, await api('GET', `/api/users/${userId}/keys`));
      checkDirectAdd(row, role, name); // a patient goes through the admission dialog
      // Checked, not recorded, before anything is signed: a key other than the one seen
      // before is refused; the new key is pinned when the verified roster holds it.
      if (this.pins.state(userId, uik) === 'changed') {
        throw new Error(`${name}'s identity key is not the one this browser saw before. Compare safety numbers with them; nothing was added.`);
      }
      say(status, `Adding ${name}…`);
      await this.session.commit((head) => {
        if (head.roster.user(userId)) throw new Error(`${name} is already in this case.`);
        return new AddUserBody(userId, role, uik, devices);
      });
      say(status, `${name} was added to the case.`);
      await this.refreshDetail();
      await this.renderMembers();
      if (button) button.textContent = 'Added';
      return true;
    } catch (err) {
      if (button) button.disabled = false;
      say(status, errorText(err), 'error');
      return false;
    }
  }

  async search() {
    const q = $('#add-q').value.trim();
    const results = $('#add-results');
    if (q.length < 2) {
      replace(results, h('li', { class: 'meta' }, 'Type at least two letters.'));
      return;
    }
    try {
      const { users } = await api('GET', `/api/directory?q=${encodeURIComponent(q)}`);
      if (!users.length) {
        replace(results, h('li', { class: 'meta' }, 'No provider matches.'));
        return;
      }
      replace(results, ...users.map((u) => {
        const inCase = Boolean(this.session.roster?.user(u.id));
        return h('li', {},
          h('span', { class: 'member-name' }, u.display_name),
          h('span', { class: 'meta' }, ` ${[u.specialty, u.organisation].filter(Boolean).join(' · ')} `),
          h('button', { type: 'button', disabled: inCase, 'aria-label': `Add ${u.display_name} to the case`, onclick: (ev) => this.addMember(u.id, ev.currentTarget, u) },
            inCase ? 'In the case' : 'Add'));
      }));
    } catch (err) {
      replace(results, h('li', { class: 'error' }, errorText(err)));
    }
  }
}

export async function roomPage(ctx, caseId) {
  const room = new Room(ctx, caseId);
  await room.start();
}


// The room's "Waiting to join" list and the admission dialog. Join requests are
// rows the server keeps (it could insert one), so nothing here adds anyone by
// itself: a manager opens the dialog, sees who is asking, why, the state of the
// identity key about to be admitted and, for patients, whether the invitation
// link binds this account, and then presses Admit (or Decline). The decision
// is app/trust/admission.js's reviewAdmission; the entry goes through the pin
// store's commit check like every other.

import { AddUserBody, RemoveUserBody, b64d, equal, safetyNumber } from '../cr1/index.js';
import { checkInvitation, shortCode } from '../cr1/invite.js';
import { api } from './api.js';
import { $, errorText, fmtDate, h, replace, say } from './dom.js';
import { nameOf } from './names.js';
import {
  BINDING_LABELS, BLOCKER_TEXT, PIN_LABELS, checkedKeys, effectiveKind, grantedRole, openRequests, reasonText,
  reviewAdmission,
} from './trust/admission.js';
import { Role } from '../cr1/index.js';

const ROLE_WORDS = { provider: 'Care-team member', patient: 'Patient' };

/** The server's invitation object (base64 fields) as cr1/invite.js's checkInvitation takes it. */
export function invitationRecord(wire) {
  if (!wire) return null;
  const bytes = (v, n) => (v ? b64d(v, n) : null);
  return {
    createdBy: wire.created_by ?? null,
    inviterDevice: wire.inviter_device ?? null,
    invitePub: bytes(wire.invite_pub, 32),
    inviteSig: bytes(wire.invite_sig, 64),
    createdMs: Number.isSafeInteger(wire.created_ms) ? wire.created_ms : null,
    proofSig: bytes(wire.proof_sig, 64),
  };
}

/** 'bound' | 'unbound' | 'bad_proof' for a patient's join request, from the verified log. */
export function bindingOf(session, request, uik) {
  let inv;
  try {
    inv = invitationRecord(request.invitation);
  } catch {
    return 'bad_proof'; // malformed fields: not a proof of anything
  }
  return checkInvitation([...session.chain.values()], session.caseId, inv, request.user, uik);
}

export class AdmissionView {
  constructor(room) {
    this.room = room;
    this.dialog = $('#admit-dialog');
    this.current = null; // {request, keys, pin, kind, binding} while the dialog is open
    this.dialog.addEventListener('close', () => { this.current = null; });
  }

  get session() {
    return this.room.session;
  }

  requests() {
    return openRequests(this.room.detail?.join_requests, this.session.roster);
  }

  async render() {
    const requests = this.requests();
    const manager = this.room.isManager();
    $('#joins-section').hidden = requests.length === 0;
    const items = await Promise.all(requests.map(async (r) => {
      const name = r.display_name || await nameOf(r.user);
      const why = r.kind === 'claim' ? 'claims this consult' : r.kind === 'patient' ? 'accepted the patient invitation'
        : r.kind === 'rejoin' ? 'asks to rejoin with a new identity key' : 'was invited';
      return h('li', { dataset: { join: String(r.id) } }, `${name} ${why}. `,
        manager
          ? h('button', { type: 'button', onclick: () => this.open(r.id) }, `Review ${name}`)
          : h('span', { class: 'meta' }, 'An owner or admin of the case reviews the request.'));
    }));
    replace($('#joins'), ...items);
    // A request resolved or gone while its dialog is open: close it. One whose invitation
    // changed (the patient's proof arrived): review it again with what is there now.
    if (this.current) {
      const now = requests.find((r) => r.id === this.current.request.id);
      if (!now) this.close('This request is no longer pending.');
      else if (JSON.stringify(now.invitation ?? null) !== JSON.stringify(this.current.request.invitation ?? null)) await this.open(now.id);
    }
  }

  close(message = '') {
    if (this.dialog.open) this.dialog.close();
    this.current = null;
    if (message) say($('#members-status'), message);
  }

  /** A join_resolved frame: declined or withdrawn elsewhere. */
  resolved(frame) {
    if (this.current && this.current.request.user === frame.user) {
      this.close(`The request was ${frame.status === 'withdrawn' ? 'withdrawn' : frame.status}.`);
    }
  }

  async open(requestId) {
    const request = this.requests().find((r) => r.id === requestId);
    if (!request) return;
    const body = $('#admit-body');
    const status = $('#admit-status');
    say(status, '');
    replace(body, h('p', {}, 'Checking the identity key…'));
    replace($('#admit-actions'));
    if (!this.dialog.open) this.dialog.showModal();
    let keys;
    try {
      keys = checkedKeys(request.user, await api('GET', `/api/users/${request.user}/keys`));
    } catch (err) {
      replace(body, this.who(request), h('p', { class: 'error', role: 'alert' }, errorText(err)));
      replace($('#admit-actions'), this.declineButton(request), ' ', this.cancelButton());
      return;
    }
    // The pin state only (nothing is recorded by looking): a key the server swapped
    // shows as CHANGED; the key is pinned once the roster holding it is verified.
    const pin = this.room.pins.state(request.user, keys.uik);
    const kind = effectiveKind(request, keys.role);
    const role = grantedRole(request, keys.role);
    const binding = kind === 'patient' ? bindingOf(this.session, request, keys.uik) : null;
    this.current = { request, keys, pin, kind, role, binding };
    this.fill();
  }

  who(r, role = null) {
    const listed = ROLE_WORDS[r.role] ?? r.role ?? '—';
    // The role granted; the listing's word beside it when the two disagree.
    const roleText = role === null ? listed
      : role === Role.PATIENT && r.role !== 'patient' ? `Patient (the request lists: ${listed})`
        : role === Role.PATIENT ? 'Patient' : listed;
    const rows = [
      ['Name', r.display_name || '—'],
      ['Role', roleText],
      ['Organisation', r.organisation || '—'],
      ['Specialty', r.specialty || '—'],
    ];
    return h('dl', { class: 'admit-who' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
  }

  fill() {
    const { request: r, keys, pin, kind, role, binding } = this.current;
    const parts = [this.who(r, role)];
    const why = h('p', { class: 'admit-why' }, h('strong', {}, 'Why: '), reasonText(r.kind),
      r.created_at ? ` (${fmtDate(r.created_at)})` : '');
    parts.push(why);
    if (r.kind === 'invite' && r.requested_by) nameOf(r.requested_by).then((n) => why.append(`, by ${n}`));
    const creator = kind === 'patient' ? r.invitation?.created_by : null;
    if (typeof creator === 'string') {
      // Who made the link: a bound binding means that member's device signed it.
      const name = h('span', { class: 'inviter-name' }, '…');
      parts.push(h('p', { class: 'admit-inviter', dataset: { inviter: creator } },
        h('strong', {}, 'Invitation link created by: '), name));
      nameOf(creator).then((n) => { name.textContent = n; }, () => { name.textContent = creator.slice(0, 8); });
    }
    parts.push(h('p', { class: `pin-state pin-${pin}`, dataset: { pin } }, h('strong', {}, 'Identity key: '), PIN_LABELS[pin]));
    let accept = null;
    if (pin === 'changed') {
      accept = h('input', { type: 'checkbox', id: 'admit-accept-changed' });
      parts.push(h('p', { class: 'error' }, `${keys.name}'s identity key is not the one this browser saw for them before. `
        + 'Someone may be impersonating them. Compare safety numbers with them before you accept.'));
      const mine = this.room.trust.ownKey();
      const before = this.room.pins.book.pinned(r.user);
      if (mine && before) {
        const digits = (uik) => h('span', { class: 'safety' }, safetyNumber(this.room.me, mine, r.user, uik).map((g) => h('span', { class: 'group' }, g)));
        parts.push(h('p', {}, 'Safety number with the key seen before: ', digits(before)));
        parts.push(h('p', {}, 'Safety number with this key: ', digits(keys.uik)));
      }
      parts.push(h('label', { class: 'check', for: 'admit-accept-changed' }, accept, ' Accept the new identity key for this person'));
    }
    let compared = null;
    if (kind === 'patient') {
      const code = shortCode(r.user, keys.uik).join(' ');
      parts.push(h('p', { class: `binding binding-${binding}`, dataset: { binding } }, h('strong', {}, 'Invitation: '), BINDING_LABELS[binding]));
      parts.push(h('p', {}, 'Patient code: ', h('span', { class: 'short-code', id: 'admit-code' }, code)));
      if (binding !== 'bound') {
        compared = h('input', { type: 'checkbox', id: 'admit-code-compared' });
        parts.push(h('p', { class: 'hint' }, 'Ask the patient to read out the code shown on their screen (in person or by phone).'));
        parts.push(h('label', { class: 'check', for: 'admit-code-compared' }, compared, ' I compared this code with the patient'));
      }
    }
    replace($('#admit-body'), ...parts);
    const admit = h('button', { type: 'button', class: 'primary', id: 'admit-btn' }, 'Admit');
    const update = () => {
      const review = reviewAdmission({ pin, kind, binding, acceptChanged: accept?.checked === true, codeCompared: compared?.checked === true });
      admit.disabled = !review.allowed;
      say($('#admit-status'), review.blockers.map((b) => BLOCKER_TEXT[b]).join(' '));
    };
    accept?.addEventListener('change', update);
    compared?.addEventListener('change', update);
    admit.addEventListener('click', () => this.admit(admit, accept?.checked === true, compared?.checked === true));
    replace($('#admit-actions'), admit, ' ', this.declineButton(r), ' ', this.cancelButton());
    update();
    admit.focus();
  }

  cancelButton() {
    return h('button', { type: 'button', onclick: () => this.close() }, 'Cancel');
  }

  declineButton(r) {
    return h('button', { type: 'button', class: 'danger', onclick: (ev) => this.decline(r, ev.currentTarget) }, 'Decline');
  }

  async admit(button, acceptChanged, codeCompared) {
    const cur = this.current;
    if (!cur) return;
    const { request: r, keys, pin, kind, role, binding } = cur;
    const review = reviewAdmission({ pin, kind, binding, acceptChanged, codeCompared });
    if (!review.allowed) return;
    button.disabled = true;
    const status = $('#admit-status');
    try {
      say(status, `Admitting ${keys.name}…`);
      // A rejoin after an identity reset: the roster still lists them under the old key.
      // CR1 changes no key in place, so remove_user first (before the new key is pinned,
      // so that sync sees no change), then add_user with the new key and the old role.
      const previous = this.session.roster.user(r.user);
      let granted = role;
      if (previous) {
        if (r.kind !== 'rejoin' || equal(previous.uikPub, keys.uik)) throw new Error(`${keys.name} is already in this case.`);
        granted = role === Role.PATIENT ? Role.PATIENT : previous.role;
        await this.session.commit((head) => {
          const member = head.roster.user(r.user);
          if (!member || equal(member.uikPub, keys.uik)) throw new Error(`${keys.name} is no longer listed under the old key.`);
          return new RemoveUserBody(r.user);
        }, { removal: true });
      }
      // The person accepted the changed key explicitly: pin it (withdraws any verification).
      if (pin === 'changed') this.room.pins.accept(r.user, keys.uik);
      await this.session.commit((head) => {
        if (head.roster.user(r.user)) throw new Error(`${keys.name} is already in this case.`);
        return new AddUserBody(r.user, granted, keys.uik, keys.devices);
      });
      this.close(`${keys.name} was added to the case.`);
      await this.room.afterMembership();
    } catch (err) {
      button.disabled = false;
      say(status, errorText(err), 'error');
    }
  }

  async decline(r, button) {
    button.disabled = true;
    try {
      await api('POST', `/api/join-requests/${r.id}/decline`, { json: {} });
      this.close(`The request of ${r.display_name || await nameOf(r.user)} was declined.`);
      await this.room.refreshDetail();
      await this.render();
    } catch (err) {
      button.disabled = false;
      say($('#admit-status'), errorText(err), 'error');
    }
  }
}

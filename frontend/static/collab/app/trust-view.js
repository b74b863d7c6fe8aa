// What the room shows about identity keys: the "identity key changed" banner
// (sending is blocked until someone accepts or re-verifies the new key), pin
// badges next to members, and safety numbers with a QR code. Safety numbers use
// this device's own identity key (the local keystore, never the roster) and the
// other person's key from the verified roster, so a substituted key gives two
// different numbers on the two screens.

import { equal, safetyNumber } from '../cr1/index.js';
import { $, h, replace, say } from './dom.js';
import { drawQr, safetyQrText } from './qr.js';
import { knownName, nameOf } from './names.js';
import { rosterPairs } from './trust/pins.js';

export const PIN_BADGES = { new: 'New key', pinned: 'Pinned', verified: 'Verified', changed: 'Key changed' };

const groupsEl = (groups) => h('span', { class: 'safety' }, groups.map((g) => h('span', { class: 'group' }, g)));

export class TrustView {
  constructor(room) {
    this.room = room;
    this.safetyUser = null;
  }

  get pins() {
    return this.room.pins;
  }

  /** This user's own key as this device knows it (never the roster's word). */
  ownKey() {
    return this.pins.ownKey(rosterPairs(this.room.session.roster));
  }

  badge(userId, uik) {
    const state = this.pins.state(userId, uik);
    return h('span', { class: `badge pin-${state}`, dataset: { pin: state } }, PIN_BADGES[state]);
  }

  /** Users of this case's roster whose key is a change nobody accepted. */
  blocking() {
    const roster = this.room.session.roster;
    return roster ? this.pins.blocking(roster) : [];
  }

  async renderBanner() {
    const banner = $('#trust-banner');
    const roster = this.room.session.roster;
    if (!roster) return;
    const gen = (this.bannerGen = (this.bannerGen ?? 0) + 1); // a later render wins
    const users = this.blocking();
    const mine = this.ownKey();
    const byUser = new Map(rosterPairs(roster));
    const items = await Promise.all(users.map(async (user) => {
      const change = this.pins.changeFor(user, byUser.get(user));
      const name = await nameOf(user);
      const before = mine ? safetyNumber(this.room.me, mine, user, change.old) : null;
      const after = mine ? safetyNumber(this.room.me, mine, user, change.new) : null;
      const cases = change.cases.length ? change.cases : [this.room.caseId];
      return h('li', { dataset: { changed: user } },
        h('p', {}, h('strong', {}, `${name}'s identity key changed.`),
          change.wasVerified ? ' You had verified the old key.' : '',
          ' Messages cannot be sent in this case until you accept or verify the new key.'),
        before ? h('p', {}, 'Old safety number: ', groupsEl(before)) : null,
        after ? h('p', {}, 'New safety number: ', groupsEl(after)) : null,
        h('p', { class: 'meta' }, 'Cases affected: ', cases.map((c, i) => [i ? ', ' : '',
          h('a', { href: `/cases/${c}/` }, `Case ${c.slice(0, 8)}`)])),
        h('p', { class: 'row' },
          h('button', { type: 'button', onclick: () => this.decide(user, change.new, 'accept') }, 'Accept the new key'),
          ' ',
          h('button', { type: 'button', class: 'primary', onclick: () => this.decide(user, change.new, 'verify') },
            `Verify: I compared the new number with ${name}`)));
    }));
    if (gen !== this.bannerGen) return;
    replace($('#trust-changes'), ...items);
    banner.hidden = items.length === 0;
    $('#composer').classList.toggle('blocked', items.length > 0);
    $('#send-blocked').hidden = items.length === 0;
    if (items.length) {
      const names = users.map(knownName).join(', ');
      $('#send-blocked').textContent = `Sending is blocked: the identity key of ${names} changed. Accept or verify it above first.`;
    }
  }

  async decide(user, uik, how) {
    if (how === 'verify') this.pins.verify(user, uik);
    else this.pins.accept(user, uik);
    const name = await nameOf(user);
    say($('#members-status'), how === 'verify' ? `${name}'s new key is verified.` : `${name}'s new key is accepted (not verified).`);
    await this.room.renderMembers();
  }

  /** Refuse to send while this roster holds an unaccepted change. */
  sendBlocker() {
    const users = this.blocking();
    if (!users.length) return null;
    return new Error(`Not sent: the identity key of ${users.map(knownName).join(', ')} changed. Accept or verify the new key first.`);
  }

  async showSafety(user) {
    const roster = this.room.session.roster;
    const them = roster.user(user.userId);
    const mine = this.ownKey();
    const name = await nameOf(user.userId);
    $('#safety-section').hidden = false;
    $('#safety-who').textContent = `You and ${name}`;
    this.safetyUser = user.userId;
    if (!mine || !them) {
      replace($('#safety'), 'This device does not hold your identity key, so it cannot show a safety number.');
      return;
    }
    const groups = safetyNumber(this.room.me, mine, them.userId, them.uikPub);
    replace($('#safety'), ...groups.map((g) => h('span', { class: 'group' }, g)));
    drawQr($('#safety-qr'), safetyQrText(groups), 180);
    $('#safety-qr').setAttribute('aria-label', `QR code of the safety number of you and ${name}`);
    this.renderSafetyActions(them, name);
    $('#safety-section').scrollIntoView({ block: 'nearest' });
    $('#safety-h').setAttribute('tabindex', '-1');
    $('#safety-h').focus();
  }

  renderSafetyActions(them, name) {
    const state = this.pins.state(them.userId, them.uikPub);
    const box = $('#safety-actions');
    const status = $('#safety-status');
    const actions = [this.badge(them.userId, them.uikPub), ' '];
    if (state === 'verified') {
      actions.push(h('button', { type: 'button', onclick: () => {
        this.pins.unverify(them.userId);
        say(status, `Verification of ${name} withdrawn.`);
        this.renderSafetyActions(them, name);
        this.room.renderMembers();
      } }, 'Withdraw verification'));
    } else {
      actions.push(h('button', { type: 'button', class: 'primary', onclick: () => {
        // Marking verified is a decision about exactly this key (the roster's).
        const now = this.room.session.roster.user(them.userId);
        if (!now || !equal(now.uikPub, them.uikPub)) return;
        this.pins.verify(them.userId, them.uikPub);
        say(status, `${name} is marked as verified on your devices.`);
        this.renderSafetyActions(them, name);
        this.room.renderMembers();
      } }, 'Mark as verified'));
    }
    replace(box, ...actions);
  }
}

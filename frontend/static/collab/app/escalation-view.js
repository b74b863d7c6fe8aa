// Escalation in the browser: on each urgent message, "escalated to <name> at 10:42"
// for everyone and the last reminder for a recipient who still owes an
// acknowledgement; the room's "Urgent escalation" panel (the case's policy, which its
// owners and admins may override); and the policy form the admin page uses too.
// The rules and wording live in escalation.js; this module only draws them.
// Whether a target can read the case is the verified roster's answer (session.roster),
// and their name the directory's as this page looks it up: the frames' `member` flag
// and `to.name` are the server's word and are not used.

import { api } from './api.js';
import { $, errorText, fmtTime, h, replace, say } from './dom.js';
import { PolicyError, describePolicy, escalationLines, isUserId, parsePolicy, stepsText } from './escalation.js';
import { lookupUser } from './names.js';

const fmt = (iso) => fmtTime(Date.parse(iso));

/** When the latest reminder was due (after a reload the frame's own time is gone). */
function lastReminderAt(timer) {
  const p = timer.policy;
  const mins = p.first_reminder_minutes + (timer.reminders_sent - 1) * p.repeat_minutes;
  return new Date(Date.parse(timer.started_at) + mins * 60000).toISOString();
}

/** A policy form: first/every/count/steps fields, Save, and optionally a reset button. */
export class PolicyForm {
  constructor(prefix, { onSave, onReset = null, resetLabel = '' }) {
    this.prefix = prefix;
    const field = (name, label, attrs) => {
      const id = `${prefix}-${name}`;
      return [h('label', { for: id }, label), h('input', { id, name, ...attrs })];
    };
    const number = { type: 'number', step: '1', inputmode: 'numeric' };
    this.status = h('p', { id: `${prefix}-status`, hidden: true });
    this.el = h('form', { id: `${prefix}-form`, novalidate: true },
      field('first', 'Minutes before the first reminder', { ...number, min: '1', max: '1440' }),
      field('every', 'Minutes between reminders', { ...number, min: '1', max: '1440' }),
      field('count', 'Reminders in all', { ...number, min: '0', max: '50' }),
      field('steps', 'Then escalate to (who:minutes after the message, in order)', {
        type: 'text', autocomplete: 'off', 'aria-describedby': `${prefix}-steps-hint`,
      }),
      h('p', { id: `${prefix}-steps-hint`, class: 'hint' },
        'oncall (the provider on call for the case\'s specialty), backup (their backup) or owner (who opened the case), '
        + 'e.g. oncall:10, backup:20, owner:30. Leave empty for no escalation.'),
      h('p', { class: 'row' },
        h('button', { type: 'submit', class: 'primary', id: `${prefix}-save` }, 'Save'),
        onReset ? h('button', { type: 'button', id: `${prefix}-reset`, onclick: () => this.run(onReset) }, resetLabel) : null),
      this.status);
    this.el.addEventListener('submit', (ev) => {
      ev.preventDefault();
      let policy;
      try {
        policy = parsePolicy(this.values());
      } catch (err) {
        if (!(err instanceof PolicyError)) throw err;
        say(this.status, `${err.message} (${err.code})`, 'error');
        return;
      }
      this.run(() => onSave(policy));
    });
  }

  input(name) {
    return this.el.querySelector(`#${this.prefix}-${name}`);
  }

  values() {
    return { first: this.input('first').value, every: this.input('every').value, count: this.input('count').value, steps: this.input('steps').value };
  }

  fill(policy) {
    this.input('first').value = policy.first_reminder_minutes;
    this.input('every').value = policy.repeat_minutes;
    this.input('count').value = policy.repeat_count;
    this.input('steps').value = stepsText(policy.steps);
  }

  async run(action) {
    try {
      const saved = await action();
      if (saved) this.fill(saved);
      say(this.status, 'Saved. It applies to urgent messages sent from now on.');
    } catch (err) {
      say(this.status, errorText(err), 'error');
    }
  }
}

/** The room's part: timers per urgent message, and the case policy panel. */
export class EscalationView {
  constructor(room) {
    this.room = room;
    this.state = new Map(); // seq -> {steps: [...], reminder: {n, at, pending} | null}
    this.people = new Map(); // user id -> the page's look-up: {name, listed} (a promise until it answers)
    this.panel = null;
  }

  /** Looks up each target not looked up yet: a promise while one is pending, else
   * null. An id that is not shaped like a user id is not looked up: an unknown person. */
  lookUp(entry) {
    const waits = [];
    for (const step of entry?.steps ?? []) {
      const id = step.to?.id;
      if (typeof id !== 'string' || this.people.get(id)?.name !== undefined) continue;
      if (!this.people.has(id)) {
        const found = isUserId(id) ? lookupUser(id) : Promise.resolve({ name: null, listed: false });
        this.people.set(id, found.then((u) => {
          this.people.set(id, { name: u.name, listed: Boolean(u.listed) });
        }));
      }
      waits.push(this.people.get(id));
    }
    return waits.length ? Promise.all(waits) : null;
  }

  /** The name shown for a target: a member's as in the member list, anyone else's only
   * when the directory knows them (null: an unknown person). */
  nameOf(id) {
    const known = this.people.get(id);
    if (!known || known.name === undefined) return null;
    return this.inRoster(id) || known.listed ? known.name : null;
  }

  inRoster(id) {
    return Boolean(this.room.session?.roster?.user(id));
  }

  /** Every message's lines again (the roster changed). */
  renderAll() {
    for (const seq of this.state.keys()) this.render(seq);
  }

  entry(seq) {
    if (!this.state.has(seq)) this.state.set(seq, { steps: [], reminder: null });
    return this.state.get(seq);
  }

  /** From GET /api/cases/<id>/urgent (on load and after a reload). */
  load(messages) {
    for (const m of messages) {
      const timer = m.escalation;
      if (!timer) continue;
      const entry = this.entry(m.seq);
      entry.steps = timer.steps;
      if (timer.reminders_sent > 0 && !timer.done_at) {
        entry.reminder = { n: timer.reminders_sent, at: lastReminderAt(timer), pending: m.unacknowledged };
      }
      this.render(m.seq);
    }
  }

  /** urgent_reminder and urgent_escalated frames. */
  onFrame(frame) {
    const entry = this.entry(frame.seq);
    if (frame.type === 'urgent_reminder') {
      entry.reminder = { n: frame.reminder, at: frame.at, pending: frame.pending };
      this.room.urgentOwed.set(frame.seq, frame.pending); // the sender's "waiting for" line
      this.room.renderAcks(frame.seq);
    } else if (frame.type === 'urgent_escalated') {
      // frame.member is not kept: render asks the verified roster.
      // The same step again replaces itself; two steps of one pass differ by via (both
      // targets outside the case arrive with id null).
      const same = (s) => s.at === frame.at && s.via === frame.via && (s.to?.id ?? null) === (frame.to?.id ?? null);
      entry.steps = [...entry.steps.filter((s) => !same(s)),
        { to: frame.to, at: frame.at, via: frame.via, outcome: 'notified' }];
    }
    this.render(frame.seq);
  }

  /** The lines for one message once its targets are looked up (lookUp). */
  lines(seq, acknowledged = this.room.urgentAcks.get(seq)?.has(this.room.me) ?? false) {
    return escalationLines(this.state.get(seq), {
      me: this.room.me, acknowledged, fmt, inRoster: (id) => this.inRoster(id), nameOf: (id) => this.nameOf(id),
    });
  }

  render(seq, li = this.room.items.get(seq)) {
    if (!li) return;
    const acknowledged = this.room.urgentAcks.get(seq)?.has(this.room.me) ?? false;
    const pending = this.lookUp(this.state.get(seq));
    if (pending) {
      pending.then(() => this.render(seq, li));
      return;
    }
    const lines = this.lines(seq, acknowledged);
    let box = li.querySelector('.escalation');
    if (!lines.length) {
      box?.remove();
      return;
    }
    if (!box) {
      box = h('ul', { class: 'escalation plain', 'aria-label': 'Escalation' });
      const after = li.querySelector('.acks');
      if (after) after.after(box); else li.append(box);
    }
    replace(box, ...lines.map((line) => h('li', { class: line.startsWith('Reminder') ? 'reminder' : 'escalated' }, line)));
  }

  /** The "Urgent escalation" panel in the room's side column. */
  async renderPanel() {
    const side = $('.room-side');
    if (!side) return;
    if (!this.panel) {
      this.panelText = h('p', { id: 'esc-policy-now', class: 'meta', role: 'status' });
      this.panel = h('section', { class: 'card', id: 'escalation-section', 'aria-labelledby': 'esc-h' },
        h('h2', { id: 'esc-h' }, 'Urgent escalation'), this.panelText);
      const status = $('#status-section');
      if (status) status.after(this.panel); else side.prepend(this.panel);
    }
    const path = `/api/cases/${this.room.caseId}/escalation-policy`;
    const shown = await api('GET', path);
    this.showPolicy(shown);
    if (this.room.isManager() && !this.form) {
      this.form = new PolicyForm('esc-case', {
        onSave: async (policy) => this.showPolicy(await api('PUT', path, { json: policy })),
        onReset: async () => this.showPolicy(await api('DELETE', path)),
        resetLabel: 'Use the organisation default',
      });
      this.panel.append(h('details', { id: 'esc-override' },
        h('summary', {}, 'Change it for this case'), this.form.el));
      this.form.fill(shown);
    }
  }

  showPolicy(policy) {
    const source = policy.source === 'case' ? 'This case: ' : 'Organisation default: ';
    say(this.panelText, source + describePolicy(policy));
    return policy;
  }

  panelError(err) {
    if (this.panelText) say(this.panelText, errorText(err), 'error');
  }
}

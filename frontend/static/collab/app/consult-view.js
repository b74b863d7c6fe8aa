// The consult record in the case room (docs/workflow.md §8): the request card at the
// top, the report cards (a superseded one stays, marked), the consultant's report form
// and time panel, and the active-time clock. The rules are in consult.js and
// active-time.js; this module only reads the page and draws.

import { Role } from '../cr1/index.js';
import { ActiveTime } from './active-time.js';
import * as consult from './consult.js';
import { $, errorText, fmtDate, h, replace, say } from './dom.js';
import { sendMessage } from './messaging.js';
import { knownName, nameOf } from './names.js';

const TICK_MS = 15_000;
const INPUT_EVENTS = ['keydown', 'pointerdown', 'pointermove', 'wheel', 'scroll', 'input'];
const URGENCY = { routine: 'Routine', soon: 'Soon', urgent: 'Urgent' };
const CALLBACK = { message: 'a message in this case', phone: 'phone', page: 'page' };
const yes = (v) => (v === true ? 'Yes' : 'No');

export class ConsultView {
  constructor(room) {
    this.room = room;
    this.me = room.me;
    this.items = []; // consult messages in seq order
    this.record = null;
    this.clock = null;
    this.sendingTime = Promise.resolve();
  }

  /** The genesis entry's author: who asked for the consult. */
  requester() {
    return this.room.session.chain.get(0)?.authorUserId ?? null;
  }

  /** Everyone else who has been in a roster of the case other than as a patient. */
  consultants() {
    const requester = this.requester();
    const out = new Set();
    for (const entry of this.room.session.chain.values()) {
      for (const u of entry.roster.users) if (u.role !== Role.PATIENT && u.userId !== requester) out.add(u.userId);
    }
    return out;
  }

  isConsultant() {
    return this.room.ctx.role === 'provider' && this.consultants().has(this.me);
  }

  /** Called with the room's session synced: show the forms to a consultant, start the clock. */
  start() {
    this.recompute();
    if (!this.isConsultant()) return;
    $('#report-section').hidden = false;
    $('#time-section').hidden = false;
    $('#report-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.sendReport();
    });
    $('#time-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.addManual();
    });
    $('#tm-date').value = consult.utcDate(Date.now());
    this.clock = new ActiveTime();
    const input = () => this.clock.input(Date.now());
    for (const type of INPUT_EVENTS) document.addEventListener(type, input, { capture: true, passive: true });
    document.addEventListener('visibilitychange', () => {
      const visible = document.visibilityState === 'visible';
      this.clock.visibility(visible, Date.now());
      if (!visible) this.flushActive(true);
    });
    window.addEventListener('pagehide', () => this.flushActive(true));
    if (document.visibilityState === 'visible') input();
    setInterval(() => {
      if (this.clock.due(Date.now())) this.flushActive(false);
      this.renderTime();
      this.renderEntries(); // entries past the recall window leave the list
    }, TICK_MS);
    this.renderTime();
  }

  /** A consult message from the timeline: taken here (true), or left to it (false). A
   * valid request also stays in the timeline as a message (its one-line text). */
  take(msg) {
    const contentType = msg.header.contentType;
    if (!consult.CONTENT_TYPES.includes(contentType)) return false;
    // msg is kept for the Recall action on one's own report and time entries.
    const item = { seq: msg.seq, sender: msg.header.senderUserId, sentMs: Number(msg.header.sentMs), contentType, body: msg.body, msg };
    this.items.push(item);
    const before = this.record?.skipped ?? 0;
    this.recompute();
    if (this.record.skipped > before) {
      // Invalid, or from someone who may not send it: shown as unsupported, nothing more.
      this.room.insert(h('li', { class: 'message unsupported', dataset: { seq: String(msg.seq) } },
        h('p', { class: 'meta' }, `An unsupported ${contentType.replace('_', ' ')} message from ${knownName(item.sender)} is not shown.`)));
      return true;
    }
    return contentType !== consult.REQUEST;
  }

  /** A consult message recalled by its sender or removed by the server (recall.js
   * apply): it leaves the record, so the cards, time totals and billing summaries are
   * read again without it, and its plaintext is no longer held here. */
  remove(seq) {
    const kept = this.items.filter((i) => i.seq !== seq);
    if (kept.length === this.items.length) return false;
    this.items = kept;
    this.recompute();
    return true;
  }

  /** The room starts over from seq 0 (earlier epochs became readable). */
  reset() {
    this.items = [];
    this.recompute();
  }

  recompute() {
    this.record = consult.readRecord(this.items, { requester: this.requester(), consultants: this.consultants() });
    this.render();
  }

  // --- drawing --------------------------------------------------------------------

  render() {
    const box = $('#consult-record');
    const r = this.record;
    const cards = [];
    if (r.request) cards.push(this.requestCard(r));
    for (const report of [...r.reports].reverse()) cards.push(this.reportCard(r, report));
    replace(box, ...cards);
    box.hidden = cards.length === 0;
    this.renderTime();
    this.renderEntries();
    const mine = r.currentReports().filter((x) => x.author === this.me).pop();
    const hint = $('#report-supersedes');
    if (hint) hint.textContent = mine ? `This report replaces your report #${mine.seq}; both stay in the room.` : '';
  }

  requestCard(r) {
    const c = r.request;
    const who = h('span', {}, knownName(r.requester));
    nameOf(r.requester).then((n) => { who.textContent = n; });
    const detail = c.callback.detail ? `: ${c.callback.detail}` : '';
    return h('article', { class: 'consult-card request-card', 'aria-labelledby': 'consult-request-h' },
      h('h2', { id: 'consult-request-h' }, 'Consult request',
        r.requestAmended ? h('span', { class: 'badge' }, 'Amended') : null),
      h('p', { class: 'meta' }, 'From ', who, ` · #${r.requestSeq}`),
      fields([
        ['Reason', c.reason], ['Question', c.question], ['History', c.history], ['Medications', c.medications],
        ['Tried so far', c.tried], ['Urgency', URGENCY[c.urgency] ?? c.urgency],
        ['Call back by', `${CALLBACK[c.callback.method] ?? c.callback.method}${detail}`],
        ['Patient consented', yes(c.patient_consent)],
      ]));
  }

  reportCard(r, report) {
    const x = report.report;
    const who = h('span', {}, knownName(report.author));
    nameOf(report.author).then((n) => { who.textContent = n; });
    const b = consult.billingSummary(r, report);
    const superseded = report.supersededBy !== null;
    return h('article', { class: `consult-card report-card${superseded ? ' superseded' : ''}`, dataset: { seq: String(report.seq) } },
      h('h2', {}, `Report #${report.seq}`,
        superseded ? h('span', { class: 'badge superseded-badge' }, `Superseded by #${report.supersededBy}`) : null,
        x.supersedes ? h('span', { class: 'meta' }, ` replaces #${x.supersedes}`) : null),
      h('p', { class: 'meta' }, 'By ', who, ` · ${fmtDate(report.sentMs)}`),
      this.recallButton(report.seq),
      fields([
        ['Assessment', x.assessment], ['Recommendations', x.recommendations], ['Follow-up', x.follow_up],
        ['Face-to-face referral needed', yes(x.referral_needed)],
      ]),
      h('section', { class: 'billing', 'aria-label': 'Time and billing summary' },
        h('h3', {}, 'Time and billing'),
        fields([
          ['Cumulative minutes', `${b.cumulative_minutes}${b.recorded_minutes !== b.cumulative_minutes ? ` (recorded now: ${b.recorded_minutes})` : ''}`],
          ['Date range', `${b.first_date} to ${b.last_date}`],
          ['Request reason present', yes(b.request_reason_present)],
          ['Written report present', yes(b.written_report_present)],
          ["Requester's patient-consent note", yes(b.patient_consent)],
        ]),
        b.warnings.length ? h('ul', { class: 'advisory', 'aria-label': 'Advisory warnings' },
          ...b.warnings.map((w) => h('li', { dataset: { warning: w } }, consult.WARNINGS[w]))) : null));
  }

  /** The Recall action (recall.js) on one of this user's consult messages in its window. */
  recallButton(seq) {
    const item = this.items.find((i) => i.seq === seq);
    return item?.msg ? this.room.recall?.button(item.msg) ?? null : null;
  }

  /** This user's time entries that can still be recalled, each with its Recall action. */
  renderEntries() {
    const list = $('#time-entries');
    if (!list) return;
    const rows = [];
    for (const item of this.items) {
      if (item.contentType !== consult.TIME_ENTRY || item.sender !== this.me || !consult.isValid(item.contentType, item.body)) continue;
      const button = this.recallButton(item.seq);
      if (!button) continue;
      const t = item.body.time;
      rows.push(h('li', { dataset: { seq: String(item.seq) } },
        `${t.minutes} min ${t.kind === 'active' ? 'active' : 'entered'}, ${consult.utcDate(t.start_ms)}`,
        t.note ? ` (${t.note})` : '', ' ', button));
    }
    replace(list, ...rows);
    list.hidden = rows.length === 0;
  }

  renderTime() {
    const el = $('#time-total');
    if (!el || !this.record) return;
    const t = this.record.timeOf(this.me);
    const counting = this.clock ? Math.floor(this.clock.pending(Date.now()) / 60_000) : 0;
    el.textContent = `Your time on this case: ${t.minutes} min (${t.activeMinutes} active, ${t.manualMinutes} entered)`
      + `${t.firstDate ? `, ${t.firstDate} to ${t.lastDate}` : ''}.`;
    $('#time-counting').textContent = this.clock ? `Counting now: ${counting} min not yet recorded.` : '';
  }

  // --- sending --------------------------------------------------------------------

  async send(contentType, body) {
    if (!this.room.socket?.open) throw new Error('Not connected; wait for the connection to come back, then send again.');
    return sendMessage(this.room.socket, this.room.session, body, contentType);
  }

  /** Send the active time counted so far (one at a time): {minutes, seq} sent, or null. */
  flushActive(final) {
    const run = this.sendingTime.then(async () => {
      if (!this.clock) return null;
      const entry = this.clock.take(Date.now(), { final });
      if (!entry) return null;
      // A tab left open for days: the period is at most 24 h (the minutes fit in it).
      const startMs = Math.max(entry.startMs, entry.endMs - consult.DAY_MS);
      try {
        const body = consult.timeEntryBody({ kind: 'active', minutes: entry.minutes, startMs, endMs: entry.endMs });
        consult.checkNewEntry(this.record.timeOf(this.me), body);
        const { ack } = await this.send(consult.TIME_ENTRY, body);
        return { minutes: entry.minutes, seq: ack.seq };
      } catch (err) {
        say($('#time-status'), `Active time could not be recorded: ${errorText(err)}`, 'error');
        return null;
      }
    });
    this.sendingTime = run.catch(() => null);
    return run;
  }

  async addManual() {
    const status = $('#time-status');
    const minutes = Number($('#tm-minutes').value);
    const day = $('#tm-date').value;
    const at = /^\d{4}-\d{2}-\d{2}$/.test(day) ? Date.parse(`${day}T12:00:00Z`) : NaN;
    try {
      if (!Number.isFinite(at)) throw new consult.ConsultBodyError('bad_value', 'date', 'is not a date');
      const body = consult.timeEntryBody({ kind: 'manual', minutes, startMs: at, endMs: at, note: $('#tm-note').value.trim() });
      consult.checkNewEntry(this.record.timeOf(this.me), body);
      $('#tm-add').disabled = true;
      await this.send(consult.TIME_ENTRY, body);
      $('#tm-minutes').value = '';
      $('#tm-note').value = '';
      say(status, `${minutes} min recorded.`);
    } catch (err) {
      say(status, err instanceof consult.ConsultBodyError ? `Not recorded: ${timeProblem(err)} (${err.code})` : errorText(err), 'error');
    } finally {
      $('#tm-add').disabled = false;
    }
  }

  async sendReport() {
    const status = $('#report-status');
    const button = $('#report-send');
    const assessment = $('#rp-assessment').value.trim();
    const recommendations = $('#rp-recommendations').value.trim();
    if (!assessment || !recommendations) {
      say(status, 'Write the assessment and the recommendations.', 'error');
      (assessment ? $('#rp-recommendations') : $('#rp-assessment')).focus();
      return;
    }
    button.disabled = true;
    try {
      say(status, 'Sending your report…');
      // The active time so far goes first, so the report's summary includes it.
      const justSent = await this.flushActive(true);
      const t = this.record.timeOf(this.me);
      const today = consult.utcDate(Date.now());
      let [minutes, firstDate, lastDate] = consult.reportTime(t, Date.now());
      if (justSent && !this.items.some((i) => i.seq === justSent.seq)) {
        minutes += justSent.minutes; // acknowledged, but its frame is not back yet
        if (today > lastDate) lastDate = today;
      }
      const mine = this.record.currentReports().filter((x) => x.author === this.me).pop();
      const body = consult.reportBody({
        assessment, recommendations, followUp: $('#rp-follow-up').value.trim(),
        referralNeeded: $('#rp-referral').checked, seenInLast14Days: $('#rp-seen').checked ? true : null,
        supersedes: mine ? mine.seq : null, minutes, firstDate, lastDate,
      });
      await this.send(consult.REPORT, body);
      for (const id of ['#rp-assessment', '#rp-recommendations', '#rp-follow-up']) $(id).value = '';
      $('#rp-referral').checked = false;
      $('#rp-seen').checked = false;
      say(status, 'Report sent. The case is now answered.');
    } catch (err) {
      say(status, err instanceof consult.ConsultBodyError ? `Not sent: ${err.message} (${err.code})` : errorText(err), 'error');
    } finally {
      button.disabled = false;
    }
  }
}

function timeProblem(err) {
  if (err.code === 'day_over_24h') return 'that would be more than 24 hours on one day';
  if (err.field === 'time.minutes') return 'minutes must be a whole number from 1 to 1440';
  return err.message;
}

function fields(rows) {
  return h('dl', { class: 'consult-fields' },
    ...rows.filter(([, v]) => v !== '' && v !== null && v !== undefined).flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

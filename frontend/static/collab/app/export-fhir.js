// The consult as a FHIR R4 Bundle of type "collection", built in this browser after
// local decryption: the same Bundle collab/client/export/fhir.py builds from the same
// model (tests compare them). Why "collection": docs/workflow.md, "Exporting a consult".

import { sha512 } from '../cr1/index.js';
import {
  consultRequest, instant, isConsultant, member, msInstant, removalLine, reports, textOf, timeTotals, warningText,
} from './export-record.js';

const SR_STATUS = { requested: 'active', accepted: 'active', answered: 'active', closed: 'completed' };
const PRIORITY = { routine: 'routine', soon: 'urgent', urgent: 'asap' };
const CONSULT_NOTE = { coding: [{ system: 'http://loinc.org', code: '11488-4', display: 'Consult note' }], text: 'Consult note' };
const CONSULTATION = { coding: [{ system: 'http://snomed.info/sct', code: '11429006', display: 'Consultation' }], text: 'Consultation' };
const URI = 'urn:ietf:rfc:3986';
// eslint-disable-next-line no-control-regex
const ODD_SPACE = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]/g;
const DATE = /^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$/;
const LINES = /\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]/;
const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#x27;' };

export const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ESCAPES[c]);

/** A FHIR string: odd whitespace and controls become spaces; blank is null. */
export function fhirText(value) {
  if (typeof value !== 'string') return null;
  const clean = value.replace(ODD_SPACE, ' ').trim();
  return clean || null;
}

function splitLines(s) {
  if (!s) return [];
  const parts = s.split(LINES);
  if (parts[parts.length - 1] === '') parts.pop();
  return parts;
}

function hex(bytes) {
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** SHA-512 of "<case>:<what>:<n>" shaped as a UUID (version 8), as fhir.py's rid. */
export function rid(caseId, what, n = 0) {
  const d = sha512(new TextEncoder().encode(`${caseId}:${what}:${n}`)).slice(0, 16);
  d[6] = (d[6] & 0x0f) | 0x80;
  d[8] = (d[8] & 0x3f) | 0x80;
  const h = hex(d);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function base64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function narrative(lines) {
  const paras = lines.map((l) => `<p>${escapeHtml(fhirText(l) ?? '')}</p>`).join('') || '<p></p>';
  return { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${paras}</div>` };
}

class Builder {
  constructor(model) {
    this.x = model;
    this.caseId = String(model.case.id);
    const people = [...model.members];
    for (const m of model.messages) {
      if (m.sender && !member(model, m.sender) && people.every((p) => p.user_id !== m.sender)) {
        people.push({ user_id: m.sender, role: 'member', display_name: '', specialty: '' });
      }
    }
    this.people = people;
    const patient = people.find((p) => p.role === 'patient');
    this.subject = patient ? this.ref(patient.user_id) : { display: `The patient of case ${this.caseId}` };
  }

  ref(userId) {
    const p = this.people.find((q) => q.user_id === userId);
    if (!p) return { display: `user ${userId}` };
    const out = { reference: `urn:uuid:${p.user_id}` };
    const name = fhirText(p.display_name);
    if (name) out.display = name;
    return out;
  }

  url(what, n = 0) {
    return `urn:uuid:${rid(this.caseId, what, n)}`;
  }

  person(p) {
    const r = { resourceType: p.role === 'patient' ? 'Patient' : 'Practitioner', id: p.user_id, identifier: [{ system: URI, value: `urn:uuid:${p.user_id}` }] };
    const name = fhirText(p.display_name);
    if (name) r.name = [{ text: name }];
    return r;
  }

  serviceRequest(allReports) {
    const c = this.x.case;
    const request = consultRequest(this.x);
    const urgency = (request ? request.urgency : '') || String(c.urgency ?? '');
    const sr = {
      resourceType: 'ServiceRequest', id: rid(this.caseId, 'service-request'),
      identifier: [{ system: URI, value: `urn:uuid:${this.caseId}` }],
      status: SR_STATUS[c.status] ?? 'unknown', intent: 'order', category: [CONSULTATION], subject: this.subject,
    };
    if (PRIORITY[urgency]) sr.priority = PRIORITY[urgency];
    const authored = request ? msInstant(request.message.sent_ms) : instant(c.opened_at);
    if (authored) sr.authoredOn = authored;
    sr.requester = this.ref(request ? request.message.sender : this.x.requester);
    const specialty = fhirText(c.specialty);
    if (specialty) sr.performerType = { text: specialty };
    const performers = [];
    for (const r of allReports) if (!performers.includes(r.message.sender)) performers.push(r.message.sender);
    if (performers.length) sr.performer = performers.map((u) => this.ref(u));
    if (request) {
      const reason = fhirText(request.reason);
      if (reason) sr.reasonCode = [{ text: reason }];
      const notes = [['Question', request.question], ['History', request.history], ['Medications', request.medications],
        ['Tried', request.tried], ['Call-back', [request.callbackMethod, request.callbackDetail].filter((x) => x).join(' ')],
        ['Patient consent', request.patientConsent ? 'noted by the requester' : 'not noted']];
      if (request.amends !== null) notes.push(['Amends', `the request of message #${request.amends}`]);
      sr.note = notes.filter(([, t]) => fhirText(t)).map(([label, t]) => ({ text: `${label}: ${fhirText(t)}` }));
    }
    return sr;
  }

  task(allReports) {
    const c = this.x.case;
    const status = String(c.status);
    let taskStatus = { requested: 'requested', accepted: 'accepted', answered: 'completed' }[status] ?? null;
    if (status === 'closed') taskStatus = allReports.length ? 'completed' : 'cancelled';
    const task = {
      resourceType: 'Task', id: rid(this.caseId, 'task'), status: taskStatus || 'requested', intent: 'order',
      businessStatus: { text: fhirText(status) || 'unknown' },
      focus: { reference: this.url('service-request') }, basedOn: [{ reference: this.url('service-request') }],
      for: this.subject, requester: this.ref(this.x.requester),
    };
    const priority = PRIORITY[String(c.urgency)];
    if (priority) task.priority = priority;
    const opened = instant(c.opened_at);
    const changed = instant(c.status_changed_at);
    if (opened) {
      task.authoredOn = opened;
      task.executionPeriod = { start: opened };
    }
    if (changed) {
      task.lastModified = changed;
      if (status === 'closed' && opened) task.executionPeriod.end = changed;
    }
    let owner = null;
    const notes = [];
    for (const row of this.x.status_history) {
      const to = fhirText(row.to);
      const frm = fhirText(row.from);
      const reason = fhirText(row.reason);
      if (to === null) continue;
      if (to === 'accepted') owner = row.by;
      const note = { authorReference: this.ref(row.by), text: frm ? `status ${frm} → ${to}` : `status ${to}` };
      if (reason) note.text += ` (${reason})`;
      const at = instant(row.at);
      if (at) note.time = at;
      notes.push(note);
    }
    if (owner !== null && owner !== undefined) task.owner = this.ref(owner);
    if (notes.length) task.note = notes;
    return task;
  }

  async communication(m) {
    if (m.removed) { // recalled or purged: one line, never content
      const gone = {
        resourceType: 'Communication', id: rid(this.caseId, 'message', m.seq),
        basedOn: [{ reference: this.url('service-request') }], status: 'entered-in-error', subject: this.subject,
        note: [{ text: `Message #${m.seq} ${removalLine(m.removed)}` }],
      };
      if (m.sender) gone.sender = this.ref(m.sender);
      return gone;
    }
    const comm = {
      resourceType: 'Communication', id: rid(this.caseId, 'message', m.seq),
      basedOn: [{ reference: this.url('service-request') }], status: 'completed',
      category: [{ text: fhirText(m.content_type) || 'text' }], subject: this.subject,
      sent: msInstant(m.sent_ms), sender: this.ref(m.sender),
    };
    const payload = [];
    const text = fhirText(textOf(m));
    if (text) payload.push({ contentString: text });
    for (const image of m.images) {
      const sha1 = new Uint8Array(await crypto.subtle.digest('SHA-1', image.data));
      payload.push({ contentAttachment: {
        contentType: image.mime, data: base64(image.data), size: image.data.length, hash: base64(sha1),
        title: `Image ${image.width}x${image.height}${image.kind === 'original' ? ' (unmarked original)' : ''}`,
      } });
    }
    if (payload.length) comm.payload = payload;
    if (m.unavailable !== null && m.unavailable !== undefined) comm.note = [{ text: fhirText(m.unavailable) || 'not available on this device' }];
    return comm;
  }

  timeLines(r) {
    const b = r.billing;
    const yes = (v) => (v === true ? 'yes' : 'no');
    const lines = [`Cumulative minutes stated on this report: ${b.cumulative_minutes} (${b.first_date} to ${b.last_date})`,
      `Minutes in the author's time entries now: ${b.recorded_minutes}`,
      `Request reason present: ${yes(b.request_reason_present)}`, `Written report present: ${yes(b.written_report_present)}`,
      `Patient consent noted by the requester: ${yes(b.patient_consent)}`];
    for (const t of timeTotals(this.x)) {
      const who = this.ref(t.userId).display || t.userId;
      lines.push(`Time entries of ${who}: ${t.minutes} minutes in ${t.entries} entries, ${t.firstDate} to ${t.lastDate}`);
    }
    for (const code of b.warnings) lines.push(`Advice: ${warningText(code)}`);
    return lines;
  }

  composition(r, bySeq) {
    const m = r.message;
    const older = r.supersedes !== null ? bySeq.get(r.supersedes) : null;
    let title = 'Consult report';
    if (r.supersededBy !== null) title += ` (superseded by the report of message #${r.supersededBy})`;
    const comp = {
      resourceType: 'Composition', id: rid(this.caseId, 'report', m.seq), status: older ? 'amended' : 'final',
      type: CONSULT_NOTE, subject: this.subject, date: msInstant(m.sent_ms), author: [this.ref(m.sender)], title,
      section: [
        { title: 'Assessment', text: narrative(splitLines(r.assessment)) },
        { title: 'Recommendations', text: narrative(splitLines(r.recommendations)) },
        { title: 'Follow-up', text: narrative(splitLines(r.followUp)) },
        { title: 'Referral', text: narrative([`Face-to-face referral needed: ${r.referralNeeded ? 'yes' : 'no'}`]) },
        { title: 'Time', text: narrative(this.timeLines(r)) },
      ],
    };
    if (DATE.test(r.firstDate) && DATE.test(r.lastDate)) comp.event = [{ period: { start: r.firstDate, end: r.lastDate } }];
    if (older) comp.relatesTo = [{ code: 'replaces', targetReference: { reference: this.url('report', older.message.seq) } }];
    return comp;
  }
}

/** The Bundle (a plain object) of a model; `progress(done, total)` per message. */
export async function buildBundle(model, progress = () => {}) {
  const b = new Builder(model);
  const allReports = reports(model).filter((r) => isConsultant(model, member(model, r.message.sender)));
  const bySeq = new Map(allReports.map((r) => [r.message.seq, r]));
  const resources = [b.serviceRequest(allReports), b.task(allReports), ...allReports.map((r) => b.composition(r, bySeq))];
  let done = 0;
  for (const m of model.messages) {
    resources.push(await b.communication(m));
    progress(++done, model.messages.length);
  }
  resources.push(...b.people.map((p) => b.person(p)));
  const bundleId = rid(b.caseId, 'bundle', model.exported_at);
  return {
    resourceType: 'Bundle', id: bundleId, identifier: { system: URI, value: `urn:uuid:${bundleId}` },
    type: 'collection', timestamp: model.exported_at,
    entry: resources.map((r) => ({ fullUrl: `urn:uuid:${r.id}`, resource: r })),
  };
}

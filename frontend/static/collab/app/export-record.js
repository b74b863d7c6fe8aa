// What the consult record says, for the export: the current request, the consultants'
// reports and their time, read with the room's own rules (consult.js: readRecord and
// billingSummary, docs/content-types.md), as collab/client/export/record.py does over
// collab.client.consult. A request counts only from the case's opener, reports and
// time only from a consultant, and only valid bodies. The case's opener is the model's
// `requester`: the verified genesis log entry's author (as consult-view.js reads it),
// never the server's `opened_by`, which is only shown.
//
// Model: {case, status_history, members: [{user_id, role, display_name, specialty}],
//   messages: [{seq, sender, sent_ms, content_type, body|null, unavailable|null,
//   images: [{index, mime, width, height, kind, data: Uint8Array}],
//   removed: {verdict, at_ms, detail}|null}], exported_at, exported_by, requester}

import { REQUEST, WARNINGS, billingSummary, isValid, readRecord } from './consult.js';
import { PURGED, RECALLED } from './recall.js';

/** Milliseconds as YYYY-MM-DDTHH:MM:SS.mmmZ (what the Python client writes too). */
export const msInstant = (ms) => new Date(ms).toISOString();

const INSTANT = /^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$/;
export const instant = (v) => (typeof v === 'string' && INSTANT.test(v) ? v : null);

export function member(model, userId) {
  return model.members.find((m) => m.user_id === userId) ?? null;
}

export function isConsultant(model, m) {
  return !!m && m.role !== 'patient' && m.user_id !== model.requester;
}

/** A removed message as the model keeps it (a judged removal of recall.js). */
export const removalOf = (removal) => ({
  verdict: removal.verdict, at_ms: Number.isFinite(removal.at) ? Math.trunc(removal.at) : null, detail: removal.detail ?? '',
});

/** The one line exported in place of a removed message (never its content), as
 * collab/client/export/model.py's removal_line writes it. */
export function removalLine(removal) {
  const when = Number.isInteger(removal.at_ms) ? msInstant(removal.at_ms) : '?';
  if (removal.verdict === RECALLED) return `recalled by the sender at ${when}`;
  if (removal.verdict === PURGED) return `removed by the server at ${when} (retention policy)`;
  const why = typeof removal.detail === 'string' && removal.detail ? `: ${removal.detail}` : '';
  return `removed by the server at ${when} (no valid recall from its sender${why})`;
}

export const textOf = (msg) => (typeof msg.body?.text === 'string' ? msg.body.text : '');

const NOBODY = '00000000-0000-0000-0000-000000000000';

export function record(model) {
  const items = model.messages.filter((m) => m.body)
    .map((m) => ({ seq: m.seq, sender: m.sender, sentMs: m.sent_ms, contentType: m.content_type, body: m.body }));
  const consultants = model.members.filter((m) => isConsultant(model, m)).map((m) => m.user_id);
  return readRecord(items, { requester: model.requester ?? NOBODY, consultants });
}

const messageOf = (model, seq) => model.messages.find((m) => m.seq === seq);

export function consultRequest(model) {
  const rec = record(model);
  if (!rec.request || rec.requestSeq === null) return null;
  const c = rec.request;
  const amends = rec.requestAmended
    ? model.messages.find((m) => m.content_type === REQUEST && m.sender === rec.requester && isValid(REQUEST, m.body)).seq
    : null;
  return {
    message: messageOf(model, rec.requestSeq), reason: c.reason, question: c.question, history: c.history,
    medications: c.medications, tried: c.tried, urgency: c.urgency, callbackMethod: c.callback.method,
    callbackDetail: c.callback.detail, patientConsent: c.patient_consent === true, amends,
  };
}

export function reports(model) {
  const rec = record(model);
  return rec.reports.map((r) => ({
    message: messageOf(model, r.seq), assessment: r.report.assessment, recommendations: r.report.recommendations,
    followUp: r.report.follow_up, referralNeeded: r.report.referral_needed === true,
    supersedes: Number.isInteger(r.report.supersedes) ? r.report.supersedes : null,
    minutes: r.report.time.minutes, firstDate: r.report.time.first_date, lastDate: r.report.time.last_date,
    supersededBy: r.supersededBy, billing: billingSummary(rec, r),
  }));
}

export function timeTotals(model) {
  return [...record(model).time.entries()].filter(([, s]) => s.entries)
    .map(([userId, s]) => ({ userId, minutes: s.minutes, entries: s.entries, firstDate: s.firstDate ?? '', lastDate: s.lastDate ?? '' }));
}

export function billing(model) {
  const totals = timeTotals(model);
  const rec = record(model);
  const request = rec.request ?? {};
  const firsts = totals.map((t) => t.firstDate).sort();
  const lasts = totals.map((t) => t.lastDate).sort();
  return {
    minutes: totals.reduce((n, t) => n + t.minutes, 0),
    firstDate: firsts[0] ?? '', lastDate: lasts[lasts.length - 1] ?? '',
    reasonPresent: typeof request.reason === 'string' && request.reason.trim() !== '',
    reportPresent: rec.reports.length > 0,
    patientConsent: request.patient_consent === true,
  };
}

export const warningText = (code) => WARNINGS[code] ?? code;

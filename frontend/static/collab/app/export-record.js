// What the consult record says, read from decrypted messages (docs/content-types.md):
// the current request, the consultants' reports and their time. The same rules as
// collab/client/export/record.py, on the same model (export.js builds it).
//
// Model: {case, status_history, members: [{user_id, role, display_name, specialty}],
//   messages: [{seq, sender, sent_ms, content_type, body|null, unavailable|null,
//   images: [{index, mime, width, height, kind, data: Uint8Array}]}], exported_at, exported_by}

const URGENCIES = ['routine', 'soon', 'urgent'];
const DAY_MS = 86_400_000;

const str = (v) => (typeof v === 'string' ? v : '');
const int = (v) => (typeof v === 'number' && Number.isInteger(v) ? v : null);
const obj = (v) => (v && typeof v === 'object' && !Array.isArray(v) ? v : {});

export function pad(n, width = 2) {
  return String(n).padStart(width, '0');
}

/** Milliseconds as YYYY-MM-DDTHH:MM:SS.mmmZ (what the Python client writes too). */
export function msInstant(ms) {
  return new Date(ms).toISOString();
}

export function msDate(ms) {
  return new Date(ms).toISOString().slice(0, 10);
}

const INSTANT = /^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$/;
export const instant = (v) => (typeof v === 'string' && INSTANT.test(v) ? v : null);

export function member(model, userId) {
  return model.members.find((m) => m.user_id === userId) ?? null;
}

export function isConsultant(model, m) {
  return !!m && m.role !== 'patient' && m.user_id !== model.case.opened_by;
}

const isProvider = (model, userId) => {
  const m = member(model, userId);
  return !!m && m.role !== 'patient';
};

export const textOf = (msg) => str(msg.body?.text);

export function consultRequest(model) {
  const found = model.messages.filter((m) => m.content_type === 'consult_request' && m.body && isProvider(model, m.sender));
  if (!found.length) return null;
  const latest = found[found.length - 1];
  const c = obj(latest.body.consult);
  const cb = obj(c.callback);
  const urgency = str(c.urgency);
  return {
    message: latest, reason: str(c.reason), question: str(c.question), history: str(c.history),
    medications: str(c.medications), tried: str(c.tried), urgency: URGENCIES.includes(urgency) ? urgency : '',
    callbackMethod: str(cb.method), callbackDetail: str(cb.detail), patientConsent: c.patient_consent === true,
    amends: found.length > 1 ? found[0].seq : null,
  };
}

export function reports(model) {
  const out = [];
  for (const m of model.messages) {
    if (m.content_type !== 'consult_report' || !m.body || !isConsultant(model, member(model, m.sender))) continue;
    const r = obj(m.body.report);
    const t = obj(r.time);
    const supersedes = int(r.supersedes);
    out.push({
      message: m, assessment: str(r.assessment), recommendations: str(r.recommendations), followUp: str(r.follow_up),
      referralNeeded: r.referral_needed === true, supersedes: supersedes !== null && supersedes >= 1 ? supersedes : null,
      minutes: int(t.minutes), firstDate: str(t.first_date), lastDate: str(t.last_date), supersededBy: null,
    });
  }
  const bySeq = new Map(out.map((r) => [r.message.seq, r]));
  for (const r of out) {
    const older = r.supersedes !== null ? bySeq.get(r.supersedes) : null;
    if (older && older.message.seq < r.message.seq) older.supersededBy = r.message.seq;
  }
  return out;
}

function entry(m) {
  const t = obj(m.body?.time);
  const minutes = int(t.minutes);
  const start = int(t.start_ms);
  const end = int(t.end_ms);
  if (!['active', 'manual'].includes(t.kind) || minutes === null || start === null || end === null) return null;
  if (minutes < 1 || minutes > 1440 || start < 0 || end < start || end - start > DAY_MS) return null;
  if (t.kind === 'active' && minutes > Math.ceil((end - start) / 60000)) return null;
  return { minutes, start, end };
}

export function timeTotals(model) {
  const totals = new Map();
  for (const m of model.messages) {
    if (m.content_type !== 'time_entry' || !m.body || !isConsultant(model, member(model, m.sender))) continue;
    const e = entry(m);
    if (!e) continue;
    const first = msDate(e.start);
    const last = msDate(e.end);
    const t = totals.get(m.sender);
    if (!t) {
      totals.set(m.sender, { userId: m.sender, minutes: e.minutes, entries: 1, firstDate: first, lastDate: last });
    } else {
      t.minutes += e.minutes;
      t.entries += 1;
      if (first < t.firstDate) t.firstDate = first;
      if (last > t.lastDate) t.lastDate = last;
    }
  }
  return [...totals.values()];
}

export function billing(model) {
  const totals = timeTotals(model);
  const request = consultRequest(model);
  const firsts = totals.map((t) => t.firstDate).sort();
  const lasts = totals.map((t) => t.lastDate).sort();
  return {
    minutes: totals.reduce((n, t) => n + t.minutes, 0),
    firstDate: firsts[0] ?? '', lastDate: lasts[lasts.length - 1] ?? '',
    reasonPresent: !!request && request.reason.trim() !== '',
    reportPresent: reports(model).length > 0,
    patientConsent: !!request && request.patientConsent,
  };
}

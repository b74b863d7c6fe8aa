// The consult as a record: bodies of consult_request, consult_report and time_entry
// (docs/content-types.md), their validation, and the record read from a case's
// messages. Mirrors collab/client/consult.py rule for rule and code for code; both are
// tested on tests/policy/consult_bodies.json. Pure: no DOM, no network.

export const REQUEST = 'consult_request';
export const REPORT = 'consult_report';
export const TIME_ENTRY = 'time_entry';
export const CONTENT_TYPES = [REQUEST, REPORT, TIME_ENTRY];

export const MAX_TEXT = 1000;
export const MAX_SHORT = 500;
export const MAX_LONG = 8000;
export const MAX_BODY_BYTES = 40000;
export const MAX_ENTRY_MINUTES = 1440;
export const DAY_MS = 86_400_000;
const MAX_MS = Number.MAX_SAFE_INTEGER;
const SEVEN_DAYS_MS = 7 * DAY_MS;
export const URGENCIES = ['routine', 'soon', 'urgent'];
export const CALLBACK_METHODS = ['message', 'phone', 'page'];
export const TIME_KINDS = ['active', 'manual'];
const REQUEST_LONG = ['question', 'history', 'medications', 'tried'];
const REPORT_LONG = ['assessment', 'recommendations', 'follow_up'];
const DATE = /^\d{4}-\d{2}-\d{2}$/;

export class ConsultBodyError extends Error {
  constructor(code, field, message) {
    super(`${field || 'body'}: ${message}`);
    this.name = 'ConsultBodyError';
    this.code = code;
    this.field = field;
  }
}

const utf8Length = (s) => new TextEncoder().encode(s).length;
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

function get(obj, key, path) {
  if (!Object.prototype.hasOwnProperty.call(obj, key)) throw new ConsultBodyError('missing_field', path, 'is missing');
  return obj[key];
}

function string(value, path, limit) {
  if (typeof value !== 'string') throw new ConsultBodyError('bad_type', path, 'must be a string');
  if (!value.isWellFormed()) throw new ConsultBodyError('bad_value', path, 'is not well-formed text');
  if (utf8Length(value) > limit) throw new ConsultBodyError('too_long', path, `is over ${limit} bytes`);
  return value;
}

function object(value, path) {
  if (!isObject(value)) throw new ConsultBodyError('bad_type', path, 'must be an object');
  return value;
}

function bool(value, path) {
  if (typeof value !== 'boolean') throw new ConsultBodyError('bad_type', path, 'must be true or false');
  return value;
}

function int(value, path, low, high) {
  if (typeof value !== 'number' || !Number.isInteger(value)) throw new ConsultBodyError('bad_type', path, 'must be an integer');
  if (value < low || value > high) throw new ConsultBodyError('bad_value', path, `must be between ${low} and ${high}`);
  return value;
}

function choice(value, path, choices) {
  if (typeof value !== 'string') throw new ConsultBodyError('bad_type', path, 'must be a string');
  if (!choices.includes(value)) throw new ConsultBodyError('bad_value', path, `must be one of ${choices.join(', ')}`);
  return value;
}

/** Days since 1970-01-01 of a YYYY-MM-DD calendar date. */
function date(value, path) {
  if (typeof value !== 'string') throw new ConsultBodyError('bad_type', path, 'must be a YYYY-MM-DD string');
  if (!DATE.test(value)) throw new ConsultBodyError('bad_value', path, 'must be YYYY-MM-DD');
  const [y, m, d] = value.split('-').map(Number);
  const ms = Date.UTC(y, m - 1, d);
  const back = new Date(ms);
  if (y < 1 || back.getUTCFullYear() !== y || back.getUTCMonth() !== m - 1 || back.getUTCDate() !== d) {
    throw new ConsultBodyError('bad_value', path, 'is not a calendar date');
  }
  return Math.round(ms / DAY_MS);
}

/** Sorted keys, no spaces: the senders' serialisation (cr1 encodeBody). */
export function encode(value) {
  if (Array.isArray(value)) return `[${value.map(encode).join(',')}]`;
  if (isObject(value)) {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${encode(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export function validate(contentType, body) {
  if (!CONTENT_TYPES.includes(contentType)) throw new ConsultBodyError('bad_body', '', `${contentType} is not a consult type`);
  if (!isObject(body)) throw new ConsultBodyError('bad_body', '', 'the body must be a JSON object');
  string(get(body, 'text', 'text'), 'text', MAX_TEXT);
  if (contentType === REQUEST) validateRequest(object(get(body, 'consult', 'consult'), 'consult'));
  else if (contentType === REPORT) validateReport(object(get(body, 'report', 'report'), 'report'));
  else validateTime(object(get(body, 'time', 'time'), 'time'));
  if (utf8Length(encode(body)) > MAX_BODY_BYTES) throw new ConsultBodyError('too_large', '', `the body is over ${MAX_BODY_BYTES} bytes`);
}

function validateRequest(c) {
  string(get(c, 'reason', 'consult.reason'), 'consult.reason', MAX_SHORT);
  for (const name of REQUEST_LONG) string(get(c, name, `consult.${name}`), `consult.${name}`, MAX_LONG);
  choice(get(c, 'urgency', 'consult.urgency'), 'consult.urgency', URGENCIES);
  const callback = object(get(c, 'callback', 'consult.callback'), 'consult.callback');
  choice(get(callback, 'method', 'consult.callback.method'), 'consult.callback.method', CALLBACK_METHODS);
  string(get(callback, 'detail', 'consult.callback.detail'), 'consult.callback.detail', MAX_SHORT);
  bool(get(c, 'patient_consent', 'consult.patient_consent'), 'consult.patient_consent');
}

function validateReport(r) {
  for (const name of REPORT_LONG) string(get(r, name, `report.${name}`), `report.${name}`, MAX_LONG);
  bool(get(r, 'referral_needed', 'report.referral_needed'), 'report.referral_needed');
  const supersedes = get(r, 'supersedes', 'report.supersedes');
  if (supersedes !== null) int(supersedes, 'report.supersedes', 1, MAX_MS);
  if (Object.prototype.hasOwnProperty.call(r, 'seen_in_last_14_days')) bool(r.seen_in_last_14_days, 'report.seen_in_last_14_days');
  const t = object(get(r, 'time', 'report.time'), 'report.time');
  const first = date(get(t, 'first_date', 'report.time.first_date'), 'report.time.first_date');
  const last = date(get(t, 'last_date', 'report.time.last_date'), 'report.time.last_date');
  if (last < first) throw new ConsultBodyError('bad_value', 'report.time.last_date', 'is before first_date');
  int(get(t, 'minutes', 'report.time.minutes'), 'report.time.minutes', 0, 1440 * (last - first + 1));
}

function validateTime(t) {
  const kind = choice(get(t, 'kind', 'time.kind'), 'time.kind', TIME_KINDS);
  const minutes = int(get(t, 'minutes', 'time.minutes'), 'time.minutes', 1, MAX_ENTRY_MINUTES);
  const start = int(get(t, 'start_ms', 'time.start_ms'), 'time.start_ms', 0, MAX_MS);
  const end = int(get(t, 'end_ms', 'time.end_ms'), 'time.end_ms', 0, MAX_MS);
  if (end < start) throw new ConsultBodyError('bad_value', 'time.end_ms', 'is before start_ms');
  if (end - start > DAY_MS) throw new ConsultBodyError('bad_value', 'time.end_ms', 'is more than 24 h after start_ms');
  if (kind === 'active' && minutes > Math.ceil((end - start) / 60000)) {
    throw new ConsultBodyError('bad_value', 'time.minutes', 'is more than the period holds');
  }
  string(get(t, 'note', 'time.note'), 'time.note', MAX_SHORT);
}

export function isValid(contentType, body) {
  try {
    validate(contentType, body);
    return true;
  } catch (err) {
    if (err instanceof ConsultBodyError) return false;
    throw err;
  }
}

// --- building --------------------------------------------------------------------

function line(text, limit = 200) {
  const first = String(text).trim().split(/\r\n|\r|\n/)[0] ?? '';
  return first.length <= limit ? first : `${first.slice(0, limit - 1)}…`;
}

export function requestBody({
  reason, question, history = '', medications = '', tried = '', urgency = 'routine',
  callbackMethod = 'message', callbackDetail = '', patientConsent = false, text = null,
}) {
  const body = {
    text: text ?? line(reason),
    consult: {
      reason, question, history, medications, tried, urgency,
      callback: { method: callbackMethod, detail: callbackDetail },
      patient_consent: patientConsent,
    },
  };
  validate(REQUEST, body);
  return body;
}

export function reportBody({
  assessment, recommendations, followUp = '', referralNeeded = false, supersedes = null,
  minutes, firstDate, lastDate, seenInLast14Days = null, text = null,
}) {
  const report = {
    assessment, recommendations, follow_up: followUp, referral_needed: referralNeeded, supersedes,
    time: { minutes, first_date: firstDate, last_date: lastDate },
  };
  if (seenInLast14Days !== null) report.seen_in_last_14_days = seenInLast14Days;
  const body = { text: text ?? `Report: ${line(assessment)}`, report };
  validate(REPORT, body);
  return body;
}

export function timeEntryBody({ kind, minutes, startMs, endMs, note = '', text = null }) {
  const body = { text: text ?? `Time: ${minutes} min ${kind}`, time: { kind, minutes, start_ms: startMs, end_ms: endMs, note } };
  validate(TIME_ENTRY, body);
  return body;
}

// --- reading the record ------------------------------------------------------------

export const utcDate = (ms) => new Date(ms).toISOString().slice(0, 10);

function emptyTime() {
  return { minutes: 0, activeMinutes: 0, manualMinutes: 0, firstDate: null, lastDate: null, entries: 0, perDay: new Map() };
}

export class ConsultRecord {
  constructor(requester) {
    this.requester = requester;
    this.request = null;
    this.requestSeq = null;
    this.requestAmended = false;
    this.reports = []; // {seq, author, sentMs, report, supersededBy}
    this.time = new Map(); // user id -> time summary
    this.skipped = 0;
  }

  currentReports() {
    return this.reports.filter((r) => r.supersededBy === null);
  }

  latestReport(author = null) {
    const mine = this.reports.filter((r) => author === null || r.author === author);
    const current = mine.filter((r) => r.supersededBy === null);
    const chosen = current.length ? current : mine;
    return chosen.length ? chosen[chosen.length - 1] : null;
  }

  timeOf(user) {
    return this.time.get(user) ?? emptyTime();
  }
}

const asInt = (v) => (typeof v === 'number' && Number.isInteger(v) ? v : 0);

function addTime(summary, body) {
  const t = body.time;
  const day = utcDate(t.start_ms);
  const used = summary.perDay.get(day) ?? 0;
  if (used + t.minutes > MAX_ENTRY_MINUTES) return false;
  summary.perDay.set(day, used + t.minutes);
  summary.minutes += t.minutes;
  if (t.kind === 'active') summary.activeMinutes += t.minutes;
  else summary.manualMinutes += t.minutes;
  const last = utcDate(t.end_ms);
  summary.firstDate = summary.firstDate && summary.firstDate < day ? summary.firstDate : day;
  summary.lastDate = summary.lastDate && summary.lastDate > last ? summary.lastDate : last;
  summary.entries += 1;
  return true;
}

/**
 * The record from messages in seq order ({seq, sender, sentMs, contentType, body}).
 * A request counts only from the requester (the genesis entry's author), reports and
 * time only from a consultant; anything else, and every invalid body, is skipped.
 */
export function readRecord(items, { requester, consultants }) {
  const allowed = new Set(consultants);
  const record = new ConsultRecord(requester);
  const bySeq = new Map();
  for (const item of items) {
    if (!CONTENT_TYPES.includes(item.contentType)) continue;
    if (!isValid(item.contentType, item.body)) {
      record.skipped += 1;
      continue;
    }
    if (item.contentType === REQUEST) {
      if (item.sender !== requester) {
        record.skipped += 1;
        continue;
      }
      record.requestAmended = record.request !== null;
      record.request = item.body.consult;
      record.requestSeq = item.seq;
    } else if (!allowed.has(item.sender)) {
      record.skipped += 1;
    } else if (item.contentType === REPORT) {
      const report = { seq: item.seq, author: item.sender, sentMs: item.sentMs, report: item.body.report, supersededBy: null };
      const older = bySeq.get(asInt(report.report.supersedes));
      if (older && older.supersededBy === null) older.supersededBy = item.seq;
      bySeq.set(item.seq, report);
      record.reports.push(report);
    } else {
      if (!record.time.has(item.sender)) record.time.set(item.sender, emptyTime());
      if (!addTime(record.time.get(item.sender), item.body)) record.skipped += 1;
    }
  }
  return record;
}

/** Refuse (day_over_24h) an entry that would take its sender past 24 h on a day. */
export function checkNewEntry(summary, body) {
  validate(TIME_ENTRY, body);
  const day = utcDate(body.time.start_ms);
  if ((summary.perDay.get(day) ?? 0) + body.time.minutes > MAX_ENTRY_MINUTES) {
    throw new ConsultBodyError('day_over_24h', 'time.minutes', `would take ${day} past 1440 minutes`);
  }
}

export const WARNINGS = {
  seven_day: 'Another report in this case lies within 7 days of this one: interprofessional consult codes are '
    + 'reported once per patient in 7 days (reports in other cases are not visible here).',
  fourteen_day_referral: 'A face-to-face referral is recommended: if the patient is seen face to face within 14 days, '
    + 'the interprofessional consult codes do not apply.',
  fourteen_day_seen: 'The consultant saw the patient face to face in the last 14 days: the interprofessional consult '
    + 'codes do not apply.',
};

/** The billing fields for one report and its advisory warnings (codes of WARNINGS). */
export function billingSummary(record, report) {
  const time = record.timeOf(report.author);
  const stated = report.report.time;
  const warnings = [];
  const replaced = asInt(report.report.supersedes);
  for (const other of record.reports) {
    // A correction is the same consult: the report this one replaces, or the one that
    // replaced it, does not count as another report.
    if (other.seq === report.seq || other.seq === report.supersededBy || other.seq === replaced
      || other.supersededBy === report.seq) continue;
    if (Math.abs(other.sentMs - report.sentMs) < SEVEN_DAYS_MS) {
      warnings.push('seven_day');
      break;
    }
  }
  if (report.report.referral_needed === true) warnings.push('fourteen_day_referral');
  if (report.report.seen_in_last_14_days === true) warnings.push('fourteen_day_seen');
  const request = record.request ?? {};
  const filled = (v) => typeof v === 'string' && v.trim() !== '';
  return {
    cumulative_minutes: asInt(stated.minutes),
    first_date: stated.first_date,
    last_date: stated.last_date,
    recorded_minutes: time.minutes,
    request_reason_present: filled(request.reason),
    written_report_present: filled(report.report.assessment) || filled(report.report.recommendations),
    patient_consent: request.patient_consent === true,
    warnings,
  };
}

/** [minutes, firstDate, lastDate] for a new report's time field. */
export function reportTime(summary, todayMs) {
  const today = utcDate(todayMs);
  const first = summary.firstDate ?? today;
  const seen = summary.lastDate ?? today;
  const last = seen > first ? seen : first;
  return [summary.minutes, first, last];
}

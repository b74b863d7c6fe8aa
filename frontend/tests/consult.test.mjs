// Consult bodies: the shared vectors (also read by tests/client/test_consult_bodies.py),
// the builders, and the record read from a case's messages, on the same scenarios as
// the Python tests.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import * as consult from '../static/collab/app/consult.js';

const VECTORS = JSON.parse(readFileSync(new URL('../../tests/policy/consult_bodies.json', import.meta.url), 'utf8'));
const DAY = consult.DAY_MS;
const T0 = 1764633600000;
const [REQUESTER, SPECIALIST, OTHER, PATIENT] = ['r', 's', 'o', 'p'].map((c) => `${c.repeat(8)}-0000-4000-8000-000000000000`);

function refusal(fn) {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof consult.ConsultBodyError, `expected ConsultBodyError, got ${err}`);
    return [err.code, err.field];
  }
  assert.fail('not refused');
}

for (const c of VECTORS.valid) {
  test(`valid vector: ${c.name}`, () => {
    consult.validate(c.content_type, c.body);
    assert.ok(consult.isValid(c.content_type, c.body));
  });
}

for (const c of VECTORS.invalid) {
  test(`invalid vector: ${c.name}`, () => {
    assert.deepEqual(refusal(() => consult.validate(c.content_type, c.body)), [c.code, c.field]);
    assert.equal(consult.isValid(c.content_type, c.body), false);
  });
}

test('a lone surrogate is refused', () => {
  const body = consult.timeEntryBody({ kind: 'manual', minutes: 5, startMs: T0, endMs: T0 });
  body.time.note = '\ud800';
  assert.deepEqual(refusal(() => consult.validate('time_entry', body)), ['bad_value', 'time.note']);
});

test('builders make valid bodies with a one-line summary', () => {
  const body = consult.requestBody({ reason: 'Rash on both hands\nsince May', question: 'Eczema?', urgency: 'urgent',
    callbackMethod: 'page', callbackDetail: 'bleep 221', patientConsent: true });
  assert.equal(body.text, 'Rash on both hands');
  assert.deepEqual(body.consult.callback, { method: 'page', detail: 'bleep 221' });
  const report = consult.reportBody({ assessment: 'Contact dermatitis', recommendations: 'Emollient', minutes: 12,
    firstDate: '2026-12-01', lastDate: '2026-12-01' });
  assert.equal(report.text, 'Report: Contact dermatitis');
  assert.equal(report.report.supersedes, null);
  assert.ok(!('seen_in_last_14_days' in report.report));
  assert.equal(consult.timeEntryBody({ kind: 'active', minutes: 3, startMs: T0, endMs: T0 + 180_000 }).text, 'Time: 3 min active');
  // The same bytes as Python's encode_body for the same body.
  assert.equal(consult.encode({ b: 1, a: { d: [1, 'x'], c: null } }), '{"a":{"c":null,"d":[1,"x"]},"b":1}');
});

for (const [kwargs, field] of [
  [{ minutes: -1 }, 'time.minutes'], [{ minutes: 1441, kind: 'manual' }, 'time.minutes'],
  [{ endMs: T0 - 1 }, 'time.end_ms'], [{ minutes: 30 }, 'time.minutes'],
]) {
  test(`the builder refuses negative or absurd time ${JSON.stringify(kwargs)}`, () => {
    const args = { kind: 'active', minutes: 5, startMs: T0, endMs: T0 + 600_000, ...kwargs };
    assert.deepEqual(refusal(() => consult.timeEntryBody(args)), ['bad_value', field]);
  });
}

const req = (seq, { sender = REQUESTER, reason = 'Lesion', ...kw } = {}) => ({
  seq, sender, sentMs: T0, contentType: 'consult_request', body: consult.requestBody({ reason, question: 'Excise?', ...kw }) });
const rep = (seq, { sender = SPECIALIST, sent = T0, ...kw } = {}) => ({
  seq, sender, sentMs: sent, contentType: 'consult_report',
  body: consult.reportBody({ assessment: 'Naevus', recommendations: 'Watch', minutes: 10, firstDate: '2025-12-02', lastDate: '2025-12-02', ...kw }) });
const time = (seq, minutes, start, { sender = SPECIALIST, kind = 'manual' } = {}) => ({
  seq, sender, sentMs: start, contentType: 'time_entry',
  body: consult.timeEntryBody({ kind, minutes, startMs: start, endMs: start + minutes * 60_000 }) });
const record = (items) => consult.readRecord(items, { requester: REQUESTER, consultants: [SPECIALIST, OTHER] });

test('the record takes the latest request from the requester only', () => {
  const r = record([req(1), req(2, { sender: SPECIALIST, reason: 'forged' }), req(3, { reason: 'Lesion, amended' })]);
  assert.equal(r.request.reason, 'Lesion, amended');
  assert.deepEqual([r.requestSeq, r.requestAmended, r.skipped], [3, true, 1]);
});

test('a newer report supersedes the named one and both stay', () => {
  const r = record([req(1), rep(2), rep(3, { supersedes: 2 }), rep(4, { sender: OTHER })]);
  assert.deepEqual(r.reports.map((x) => [x.seq, x.supersededBy]), [[2, 3], [3, null], [4, null]]);
  assert.deepEqual(r.currentReports().map((x) => x.seq), [3, 4]);
  assert.equal(r.latestReport(SPECIALIST).seq, 3);
});

test('a report or time from a non-consultant is skipped', () => {
  const r = record([req(1), rep(2, { sender: REQUESTER }), rep(3, { sender: PATIENT }), time(4, 5, T0, { sender: PATIENT })]);
  assert.deepEqual([r.reports.length, r.time.size, r.skipped], [0, 0, 3]);
});

test('an invalid body is skipped, never thrown', () => {
  const r = record([req(1), { seq: 2, sender: SPECIALIST, sentMs: T0, contentType: 'consult_report', body: { text: 'x', report: 'nope' } },
    { seq: 3, sender: SPECIALIST, sentMs: T0, contentType: 'time_entry', body: [] }]);
  assert.deepEqual([r.reports.length, r.skipped], [0, 2]);
});

test('time sums per consultant with its date range', () => {
  const r = record([time(1, 20, T0), time(2, 6, T0 + DAY, { kind: 'active' }), time(3, 15, T0, { sender: OTHER })]);
  const mine = r.timeOf(SPECIALIST);
  assert.deepEqual([mine.minutes, mine.activeMinutes, mine.manualMinutes], [26, 6, 20]);
  assert.deepEqual([mine.firstDate, mine.lastDate], ['2025-12-02', '2025-12-03']);
  assert.equal(r.timeOf(OTHER).minutes, 15);
  assert.equal(r.timeOf(REQUESTER).minutes, 0);
});

test('entries past 24 hours a day are skipped and refused to senders', () => {
  const r = record([time(1, 1000, T0), time(2, 500, T0 + 3_600_000)]);
  assert.deepEqual([r.timeOf(SPECIALIST).minutes, r.skipped], [1000, 1]);
  const entry = consult.timeEntryBody({ kind: 'manual', minutes: 441, startMs: T0, endMs: T0 });
  assert.deepEqual(refusal(() => consult.checkNewEntry(r.timeOf(SPECIALIST), entry)), ['day_over_24h', 'time.minutes']);
  consult.checkNewEntry(r.timeOf(SPECIALIST), consult.timeEntryBody({ kind: 'manual', minutes: 440, startMs: T0, endMs: T0 }));
});

test('billing summary fields', () => {
  const r = record([req(1, { patientConsent: true }), time(2, 25, T0), rep(3, { minutes: 25 })]);
  assert.deepEqual(consult.billingSummary(r, r.reports[0]), {
    cumulative_minutes: 25, first_date: '2025-12-02', last_date: '2025-12-02', recorded_minutes: 25,
    request_reason_present: true, written_report_present: true, patient_consent: true, warnings: [],
  });
  const bare = record([req(1, { reason: '  ' }), rep(2, { assessment: '', recommendations: '' })]);
  const s = consult.billingSummary(bare, bare.reports[0]);
  assert.deepEqual([s.request_reason_present, s.written_report_present, s.patient_consent], [false, false, false]);
});

test('the seven-day warning: another report, but not a correction', () => {
  let r = record([req(1), rep(2), rep(3, { supersedes: 2, sent: T0 + DAY })]);
  assert.deepEqual(consult.billingSummary(r, r.reports[1]).warnings, []);
  assert.deepEqual(consult.billingSummary(r, r.reports[0]).warnings, []);
  r = record([req(1), rep(2), rep(3, { sender: OTHER, sent: T0 + 6 * DAY })]);
  assert.deepEqual(consult.billingSummary(r, r.reports[1]).warnings, ['seven_day']);
  r = record([req(1), rep(2), rep(3, { sender: OTHER, sent: T0 + 8 * DAY })]);
  assert.deepEqual(consult.billingSummary(r, r.reports[1]).warnings, []);
});

test('the fourteen-day warnings', () => {
  const r = record([req(1), rep(2, { referralNeeded: true, seenInLast14Days: true })]);
  assert.deepEqual(consult.billingSummary(r, r.reports[0]).warnings, ['fourteen_day_referral', 'fourteen_day_seen']);
  assert.deepEqual(Object.keys(consult.WARNINGS).sort(), ['fourteen_day_referral', 'fourteen_day_seen', 'seven_day']);
});

test('the report time from the summary', () => {
  assert.deepEqual(consult.reportTime(record([]).timeOf(SPECIALIST), T0), [0, '2025-12-02', '2025-12-02']);
  const r = record([time(1, 20, T0), time(2, 5, T0 + 2 * DAY)]);
  assert.deepEqual(consult.reportTime(r.timeOf(SPECIALIST), T0 + 3 * DAY), [25, '2025-12-02', '2025-12-04']);
});

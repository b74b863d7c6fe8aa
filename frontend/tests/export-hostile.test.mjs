// The export against a lying server (app/export.js, export-record.js): who requested the
// consult is the verified genesis entry's author, never the case detail's opened_by, and
// a recalled or purged message (a tombstone) is judged as the room judges it (recall.js)
// and exported as one line, never content. The Python client's twin is
// tests/client/export/test_export_hostile_server.py.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import * as cr1 from '../static/collab/cr1/index.js';
import { forgetSigners } from '../static/collab/app/api.js';
import { gatherModel } from '../static/collab/app/export.js';
import { buildBundle } from '../static/collab/app/export-fhir.js';
import { buildHtml } from '../static/collab/app/export-html.js';
import { consultRequest, removalLine, reports, timeTotals } from '../static/collab/app/export-record.js';
import { V, b } from './helpers.mjs';

// The shared vectors' chain: epoch 0 by PCP (genesis), epoch 1 adds SPEC; the vectors'
// recall is PCP's own, of message #7.
const CHAIN = V.log.entries.map((e) => cr1.LogEntry.decode(b(e.entry_bytes)));
const CASE = V.log.case_id;
const R = V.recall;
const PCP = CHAIN[0].authorUserId;
const SPEC = CHAIN[1].roster.users.find((u) => u.userId !== PCP).userId;
const NOW = 1_764_633_600_000;

const request = { reason: 'chest pain', question: 'q?', history: '', medications: '', tried: '', urgency: 'routine',
  callback: { method: 'message', detail: '' }, patient_consent: true };
const time = (minutes) => ({ text: `Time: ${minutes} min`, time: { kind: 'manual', minutes, start_ms: NOW, end_ms: NOW + minutes * 60_000, note: '' } });
const report = (assessment, minutes) => ({ text: 'Report', report: { assessment, recommendations: 'r', follow_up: '', referral_needed: false,
  supersedes: null, time: { minutes, first_date: '2025-12-02', last_date: '2025-12-02' } } });
// What the fake session "decrypts": the content a verified envelope of that seq carries.
const OPENED = {
  1: [PCP, 'consult_request', { text: 'Request', consult: request }],
  2: [SPEC, 'time_entry', time(30)],
  3: [SPEC, 'consult_report', report('the consultant\'s report', 30)],
  4: [PCP, 'consult_report', report('FORGED by the requester', 600)],
  5: [PCP, 'time_entry', time(600)],
};
const honestRecall = () => ({ ...R.wire, sig: cr1.b64e(b(R.sig)) });
const tomb = (seq, removed) => ({ seq, stored_at: '2025-12-02T00:00:00+00:00', urgent: false, removed });
const ITEMS = [
  ...Object.keys(OPENED).map((seq) => ({ seq: Number(seq), stored_at: '2025-12-02T00:00:00+00:00', envelope: { seq: Number(seq) } })),
  tomb(R.seq, { reason: 'recalled', at: '2025-12-02T01:00:00+00:00', sender_user_id: PCP, recall: honestRecall() }),
  // The server claims SPEC recalled #8 but has no statement of theirs; #9 it purged.
  tomb(8, { reason: 'recalled', at: '2025-12-02T02:00:00.123456+00:00', sender_user_id: SPEC }),
  tomb(9, { reason: 'purged', at: '2025-12-03T00:00:00+00:00', sender_user_id: PCP }),
];

/** The server: it lies that SPEC opened the case, and serves three tombstones. */
function lyingServer() {
  forgetSigners();
  globalThis.fetch = async (url) => {
    const u = new URL(url, 'http://localhost');
    let json;
    if (u.pathname === `/api/cases/${CASE}`) {
      json = { id: CASE, specialty: 'Cardiology', urgency: 'routine', status: 'answered', opened_by: SPEC,
        opened_at: '2025-12-02T00:00:00+00:00', status_changed_at: null, last_seq: 9, status_history: [] };
    } else if (u.pathname === `/api/cases/${CASE}/messages`) {
      json = { messages: Number(u.searchParams.get('after')) === 0 ? ITEMS : [], more: false };
    } else if (/^\/api\/users\/[0-9a-f-]{36}\/keys$/.test(u.pathname)) {
      json = { display_name: u.pathname.includes(PCP) ? 'Dr Pat Park' : 'Dr Sam Spec', specialty: '' };
    } else {
      assert.fail(`unexpected request ${u.pathname}`);
    }
    return { status: 200, ok: true, headers: new Map(), json: async () => json };
  };
}

/** A CaseSession stand-in holding the verified chain; open() refuses a tombstone as the
 * real one does (it has no envelope). */
function session() {
  return {
    chain: new Map(CHAIN.map((e) => [Number(e.epoch), e])),
    seen: new Map(),
    sync: async () => {},
    async open(item) {
      if (!item.envelope) throw new cr1.CryptoError('bad_field', 'no envelope');
      const [sender, contentType, body] = OPENED[item.seq];
      return { msg: { seq: item.seq, header: { senderUserId: sender, sentMs: BigInt(NOW + item.seq), contentType }, body, manifests: [] } };
    },
  };
}

const gather = () => gatherModel({ caseId: CASE, session: session(), deviceId: 'd', me: PCP });

test('the requester is the genesis author, whatever opened_by the server claims', async () => {
  lyingServer();
  const model = await gather();
  assert.equal(model.requester, PCP);
  assert.equal(model.case.opened_by, SPEC); // kept as the server said it, deciding nothing
  assert.equal(consultRequest(model).message.seq, 1);
  assert.deepEqual(reports(model).map((r) => [r.message.seq, r.assessment]), [[3, 'the consultant\'s report']]);
  assert.deepEqual(timeTotals(model).map((t) => [t.userId, t.minutes]), [[SPEC, 30]]);
  const html = buildHtml(model);
  assert.ok(html.includes('<dt>Opened by</dt><dd class="text">Dr Pat Park</dd>'));
  const bundle = await buildBundle(model);
  const comps = bundle.entry.map((e) => e.resource).filter((r) => r.resourceType === 'Composition');
  assert.equal(comps.length, 1);
  assert.ok(!comps.some((c) => JSON.stringify(c).includes('FORGED'))); // the requester's report-shaped message is no report
  const task = bundle.entry.map((e) => e.resource).find((r) => r.resourceType === 'Task');
  assert.equal(task.requester.reference, `urn:uuid:${PCP}`);
});

test('recalled and purged messages are exported as one line each, judged as the room does', async () => {
  lyingServer();
  const model = await gather();
  const gone = model.messages.filter((m) => m.removed);
  assert.deepEqual(gone.map((m) => [m.seq, m.removed.verdict, m.sender, m.body]),
    [[R.seq, 'recalled', PCP, null], [8, 'removed_by_server', '', null], [9, 'purged', '', null]]);
  assert.deepEqual(gone.map((m) => removalLine(m.removed)), [
    `recalled by the sender at ${new Date(R.recalled_ms).toISOString()}`,
    'removed by the server at 2025-12-02T02:00:00.123Z (no valid recall from its sender)',
    'removed by the server at 2025-12-03T00:00:00.000Z (retention policy)',
  ]);
  const bundle = await buildBundle(model);
  const comms = bundle.entry.map((e) => e.resource).filter((r) => r.resourceType === 'Communication' && r.status === 'entered-in-error');
  assert.deepEqual(comms.map((c) => c.note[0].text), gone.map((m) => `Message #${m.seq} ${removalLine(m.removed)}`));
  assert.ok(comms.every((c) => !c.payload && !c.sent));
  assert.equal(comms[0].sender.reference, `urn:uuid:${PCP}`);
  assert.equal(comms[1].sender, undefined); // the server's claim of who sent it is not copied
  const html = buildHtml(model);
  for (const m of gone) assert.ok(html.includes(`[${removalLine(m.removed)}]`));
});

test('a forged recall of the server is "removed by the server", not the sender\'s', async () => {
  lyingServer();
  const forged = { ...R.wire, sig: cr1.b64e(new Uint8Array(64)) };
  ITEMS[5] = tomb(R.seq, { reason: 'recalled', at: '2025-12-02T01:00:00+00:00', sender_user_id: PCP, recall: forged });
  try {
    const model = await gather();
    const m = model.messages.find((x) => x.seq === R.seq);
    assert.deepEqual([m.removed.verdict, m.removed.detail, m.sender], ['removed_by_server', 'bad_signature', '']);
    assert.equal(removalLine(m.removed), 'removed by the server at 2025-12-02T01:00:00.000Z (no valid recall from its sender: bad_signature)');
  } finally {
    ITEMS[5] = tomb(R.seq, { reason: 'recalled', at: '2025-12-02T01:00:00+00:00', sender_user_id: PCP, recall: honestRecall() });
  }
});

test('what the room already judged recalled stays so, even served again as a message', async () => {
  lyingServer();
  const judged = { seq: 2, senderUserId: SPEC, verdict: 'recalled', at: NOW + 5000, detail: '' };
  const model = await gatherModel({ caseId: CASE, session: session(), deviceId: 'd', me: PCP, removed: new Map([[2, judged]]) });
  const m = model.messages.find((x) => x.seq === 2);
  assert.deepEqual([m.body, m.removed.verdict, m.sender], [null, 'recalled', SPEC]);
  assert.deepEqual(timeTotals(model), []); // its time entry no longer counts
});

test('without the genesis entry there is no requester: the export refuses', async () => {
  lyingServer();
  const s = session();
  s.chain.delete(0);
  await assert.rejects(gatherModel({ caseId: CASE, session: s, deviceId: 'd', me: PCP }), (err) => err.code === 'no_genesis');
});

test('export-record reads the model\'s requester, not the case\'s opened_by', () => {
  const messages = Object.entries(OPENED).map(([seq, [sender, contentType, body]]) => ({
    seq: Number(seq), sender, sent_ms: NOW + Number(seq), content_type: contentType, body, unavailable: null, images: [], removed: null }));
  const model = { case: { id: CASE, opened_by: SPEC }, status_history: [], messages, exported_at: 'x', exported_by: PCP, requester: PCP,
    members: [{ user_id: PCP, role: 'owner', display_name: '', specialty: '' }, { user_id: SPEC, role: 'member', display_name: '', specialty: '' }] };
  assert.equal(consultRequest(model).message.sender, PCP);
  assert.deepEqual(reports(model).map((r) => r.message.sender), [SPEC]);
  assert.deepEqual(timeTotals(model).map((t) => [t.userId, t.minutes]), [[SPEC, 30]]);
});

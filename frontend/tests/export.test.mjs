// The browser's export builders (pure): FHIR strings, ids, escaping in the HTML page.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { buildBundle, fhirText, rid } from '../static/collab/app/export-fhir.js';
import { buildHtml } from '../static/collab/app/export-html.js';

const CASE = '00000000-0000-0000-0000-000000001234';
const PCP = '00000000-0000-0000-0000-000000000001';
const HOSTILE = '<script>alert(1)</script><img src=x onerror=alert(2)>';

function model(text) {
  return {
    case: { id: CASE, specialty: 'Dermatology', urgency: 'routine', status: 'requested', opened_by: PCP, opened_at: '2025-12-02T00:00:00+00:00', status_changed_at: null },
    status_history: [],
    members: [{ user_id: PCP, role: 'owner', display_name: 'Dr <i>Morgan</i>', specialty: '' }],
    messages: [{ seq: 1, sender: PCP, sent_ms: 1764633600000, content_type: 'text', body: { text }, unavailable: null, images: [] }],
    exported_at: '2025-12-04T10:00:00.000Z', exported_by: PCP,
  };
}

test('hostile message text is escaped in the page and runs nothing', () => {
  const page = buildHtml(model(HOSTILE));
  assert.ok(!page.includes('<script>alert'));
  assert.ok(!page.includes('<img src=x'));
  assert.ok(page.includes('&lt;script&gt;alert(1)&lt;/script&gt;'));
  assert.ok(page.includes('Dr &lt;i&gt;Morgan&lt;/i&gt;'));
  assert.ok(page.includes("content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\""));
});

test('FHIR strings lose controls and odd spaces; blank is null', () => {
  assert.equal(fhirText('a\u2028b\x0bc\x00'), 'a b c');
  assert.equal(fhirText('  \u00a0 '), null);
  assert.equal(fhirText(5), null);
});

test('ids are UUID-shaped, stable and distinct', () => {
  const a = rid(CASE, 'message', 1);
  assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(a, rid(CASE, 'message', 1));
  assert.notEqual(a, rid(CASE, 'message', 2));
});

test('the bundle keeps the hostile text as data in a Communication', async () => {
  const bundle = await buildBundle(model(HOSTILE));
  assert.equal(bundle.type, 'collection');
  const comm = bundle.entry.map((e) => e.resource).find((r) => r.resourceType === 'Communication');
  assert.equal(comm.payload[0].contentString, HOSTILE);
  assert.equal(comm.sent, '2025-12-02T00:00:00.000Z');
});

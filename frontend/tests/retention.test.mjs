// The retention line of a case (app/retention.js): one plain sentence per state.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { retentionLine } from '../static/collab/app/retention.js';

const UTC = { timeZone: 'UTC', now: Date.parse('2026-12-10T12:00:00Z') };
const base = {
  lifespan_days: 30, closed_at: null, delete_after: null, legal_hold: false, legal_hold_at: null, purged_at: null,
};

test('a closed case names the day its messages and files go and the lifespan', () => {
  const line = retentionLine({ ...base, closed_at: '2026-12-03T09:00:00Z', delete_after: '2027-01-02T09:00:00Z' }, UTC);
  assert.deepEqual(line, {
    state: 'scheduled',
    text: 'Closed 3 Dec 2026: messages and files will be deleted on 2 Jan 2027 (30 days after closing).',
  });
});

test('a closed case past its date says the next purge deletes it', () => {
  const line = retentionLine({ ...base, lifespan_days: 1, closed_at: '2026-12-03T09:00:00Z', delete_after: '2026-12-04T09:00:00Z' }, UTC);
  assert.equal(line.state, 'due');
  assert.equal(line.text, 'Closed 3 Dec 2026: messages and files will be deleted at the next purge (due 4 Dec 2026, 1 day after closing).');
});

test('a hold wins over any date', () => {
  const line = retentionLine({ ...base, closed_at: '2026-12-03T09:00:00Z', legal_hold: true, legal_hold_at: '2026-12-04T09:00:00Z' }, UTC);
  assert.deepEqual(line, { state: 'held', text: 'On legal hold: nothing will be deleted.' });
});

test('a purged case says when its content was deleted', () => {
  const line = retentionLine({ ...base, closed_at: '2026-12-03T09:00:00Z', purged_at: '2027-01-02T10:00:00Z' }, UTC);
  assert.equal(line.state, 'purged');
  assert.equal(line.text, 'Closed 3 Dec 2026: messages and files were deleted on 2 Jan 2027 after the retention period.');
});

test('an open case is kept until it closes; with no period it is kept', () => {
  assert.deepEqual(retentionLine(base, UTC), { state: 'kept_open_then', text: 'Kept until the case is closed, then for 30 days.' });
  assert.deepEqual(retentionLine({ ...base, lifespan_days: null }, UTC), {
    state: 'kept', text: 'Messages and files are kept: no retention period is set.',
  });
  const closed = retentionLine({ ...base, lifespan_days: null, closed_at: '2026-12-03T09:00:00Z' }, UTC);
  assert.deepEqual(closed, { state: 'kept_closed', text: 'Closed 3 Dec 2026: messages and files are kept (no retention period is set).' });
});

test('a case reopened after a purge says its earlier content is gone', () => {
  const line = retentionLine({ ...base, purged_at: '2027-01-02T10:00:00Z' }, UTC);
  assert.equal(line.text, 'Kept until the case is closed, then for 30 days. Messages and files before 2 Jan 2027 were deleted after the retention period.');
});

test('an answer without the field shows nothing', () => {
  assert.deepEqual(retentionLine(undefined, UTC), { state: 'unknown', text: '' });
});

// The same scenarios as the command line (tests/client/test_retention_line.py).
const SHARED = JSON.parse(readFileSync(new URL('../../tests/policy/retention_lines.json', import.meta.url), 'utf8'));

for (const v of SHARED.vectors) {
  test(`shared vector: ${v.name}`, () => {
    const line = retentionLine(v.retention ?? undefined, { now: Date.parse(v.now), timeZone: 'UTC' });
    assert.deepEqual(line, { state: v.state, text: v.text });
  });
}

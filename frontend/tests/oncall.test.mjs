// The on-call line under the new-case form and the schedule page's time conversion.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { onCallText } from '../static/collab/app/oncall-line.js';
import { localToIso } from '../static/collab/app/oncall-page.js';

const ann = { id: '00000000-0000-4000-8000-000000000001', display_name: 'Ann Derm' };
const bob = { id: '00000000-0000-4000-8000-000000000002', display_name: 'Bob Derm' };
const until = '2026-12-01T16:00:00+00:00';

test('names the primary and the backup and says they are offered the consult first', () => {
  const text = onCallText({ specialty: 'Dermatology', on_call: { shift: 1, primary: ann, backup: bob, ends_at: until } });
  assert.match(text, /^On call now for Dermatology: Ann Derm, backup Bob Derm, until .+\. They are offered the consult first\.$/);
});

test('a shift whose primary is gone names the backup alone', () => {
  const text = onCallText({ specialty: 'Dermatology', on_call: { shift: 1, primary: null, backup: bob, ends_at: until } });
  assert.match(text, /^On call now for Dermatology: Bob Derm, until /);
  assert.doesNotMatch(text, /backup/);
});

test('nobody on call says the consult goes straight to the queue', () => {
  for (const onCall of [null, { shift: 1, primary: null, backup: null, ends_at: until }]) {
    assert.equal(onCallText({ specialty: 'Cardiology', service: null, on_call: onCall }),
      "Nobody is on call for Cardiology now: the consult goes straight to the specialty's queue.");
  }
});

test('a local date-time becomes an ISO instant with an offset; junk becomes empty', () => {
  const iso = localToIso('2026-12-01T08:30');
  assert.match(iso, /^2026-12-0[12]T\d\d:\d\d:00\.000Z$/);
  assert.equal(new Date(iso).getTime(), new Date('2026-12-01T08:30').getTime());
  assert.equal(localToIso(''), '');
  assert.equal(localToIso('not a time'), '');
});

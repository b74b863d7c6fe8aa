// The escalation policy form's checks (the server's bounds and codes) and what a
// message says about its reminders and escalations.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { PolicyError, describePolicy, escalationLines, isUserId, parsePolicy, stepsText } from '../static/collab/app/escalation.js';

const form = { first: '2', every: '2', count: '10', steps: 'oncall:10, backup:20, owner:30' };

test('the form gives the policy the server expects', () => {
  assert.deepEqual(parsePolicy(form), {
    first_reminder_minutes: 2, repeat_minutes: 2, repeat_count: 10,
    steps: [{ to: 'oncall', after_minutes: 10 }, { to: 'backup', after_minutes: 20 }, { to: 'owner', after_minutes: 30 }],
  });
  assert.deepEqual(parsePolicy({ ...form, steps: ' ' }).steps, []);
  assert.equal(stepsText(parsePolicy(form).steps), 'oncall:10, backup:20, owner:30');
});

for (const [change, code] of [
  [{ every: '0' }, 'bad_interval'],
  [{ every: '1.5' }, 'bad_interval'],
  [{ every: '' }, 'bad_interval'],
  [{ first: '0' }, 'bad_first_reminder'],
  [{ first: '1441' }, 'bad_first_reminder'],
  [{ count: '51' }, 'bad_count'],
  [{ count: '-1' }, 'bad_count'],
  [{ steps: 'chief:5' }, 'bad_step_kind'],
  [{ steps: 'owner' }, 'bad_steps'],
  [{ steps: 'owner:1:2' }, 'bad_steps'],
  [{ steps: 'owner:1,owner:2,owner:3,owner:4,owner:5,owner:6' }, 'bad_steps'],
  [{ steps: 'owner:0' }, 'bad_step_time'],
  [{ steps: 'oncall:10, owner:10' }, 'bad_step_time'],
  [{ steps: 'owner:10081' }, 'bad_step_time'],
]) {
  test(`a bad form is refused with ${code}: ${JSON.stringify(change)}`, () => {
    assert.throws(() => parsePolicy({ ...form, ...change }), (err) => err instanceof PolicyError && err.code === code);
  });
}

test('a policy is described in one sentence', () => {
  assert.equal(describePolicy(parsePolicy(form)),
    'A reminder after 2 minutes, then every 2 minutes, 10 in all; then the on-call provider at 10 minutes, '
    + 'the on-call backup at 20 minutes, the case owner at 30 minutes.');
  assert.equal(describePolicy(parsePolicy({ ...form, count: '0', steps: '' })), 'No reminders; no escalation.');
  assert.equal(describePolicy(parsePolicy({ ...form, count: '1', first: '1', steps: 'owner:5' })),
    'One reminder after 1 minute; then the case owner at 5 minutes.');
});

const fmt = (iso) => iso.slice(11, 16);
const step = (id, name, member, outcome = 'notified') => ({ to: { id, name }, at: '2026-12-01T10:42:00Z', member, outcome });
// The client's own knowledge: the verified roster and the directory look-up.
const roster = new Set(['u-own', 'u-x']);
const directory = { 'u-on': 'Dr Cy Vale', 'u-own': 'Dr Reyes', 'u-x': 'Dr X' };
const known = { inRoster: (id) => roster.has(id), nameOf: (id) => directory[id] ?? null };
const OUTSIDE = ' (not a member: they cannot read this case until they ask to join and a member '
  + 'admits them under "Waiting to join", after checking who they are)';

test('everyone sees to whom a message was escalated and when', () => {
  const state = { steps: [step('u-on', 'Dr Vale', false), step('u-own', 'Dr Reyes', true)], reminder: null };
  assert.deepEqual(escalationLines(state, { me: 'u-x', acknowledged: false, fmt, ...known }), [
    `Escalated to Dr Cy Vale at 10:42${OUTSIDE}`,
    'Escalated to Dr Reyes at 10:42',
  ]);
  assert.deepEqual(escalationLines(state, { me: 'u-on', acknowledged: false, fmt, ...known })[0],
    'Escalated to you at 10:42 (you are not a member: you cannot read this case until you ask to join and '
    + 'a member admits you, after checking who you are)');
});

test('membership and names are the client\'s, never the step\'s member flag or name', () => {
  const lying = { steps: [step('u-on', 'Dr Reyes', true), step('u-own', 'add u-on so they can read it', false)], reminder: null };
  assert.deepEqual(escalationLines(lying, { me: 'u-x', acknowledged: false, fmt, ...known }), [
    `Escalated to Dr Cy Vale at 10:42${OUTSIDE}`,
    'Escalated to Dr Reyes at 10:42',
  ]);
  // Without the roster and directory every target is an unknown person outside the case.
  assert.deepEqual(escalationLines(lying, { me: 'u-x', acknowledged: false, fmt }), [
    `Escalated to an unknown person at 10:42${OUTSIDE}`,
    `Escalated to an unknown person at 10:42${OUTSIDE}`,
  ]);
});

test('a target id the directory does not know is an unknown person', () => {
  const state = { steps: [step('u-ghost', 'Dr Reyes', true), { ...step(null, 'Dr Reyes', true), to: { name: 'Dr Reyes' } }], reminder: null };
  assert.deepEqual(escalationLines(state, { me: 'u-x', acknowledged: false, fmt, ...known }), [
    `Escalated to an unknown person at 10:42${OUTSIDE}`,
    `Escalated to an unknown person at 10:42${OUTSIDE}`,
  ]);
});

test('isUserId: only the shape of a user id is looked up', () => {
  assert.ok(isUserId('00000000-0000-4000-8000-000000000001'));
  for (const bad of ['../keys', '00000000-0000-4000-8000-00000000000', 'U0000000-0000-4000-8000-000000000001', 7, null, {}]) {
    assert.equal(isUserId(bad), false, String(bad));
  }
});

test('a step without a target is not shown as an escalation', () => {
  const state = { steps: [{ to: null, at: '2026-12-01T10:42:00Z', member: false, outcome: 'no_target' }], reminder: null };
  assert.deepEqual(escalationLines(state, { me: 'u-x', acknowledged: false, fmt }), []);
});

test('the reminder shows only to a recipient who still owes an acknowledgement', () => {
  const state = { steps: [], reminder: { n: 3, at: '2026-12-01T10:36:00Z', pending: ['u-derm'] } };
  assert.deepEqual(escalationLines(state, { me: 'u-derm', acknowledged: false, fmt }),
    ['Reminder 3 at 10:36: please acknowledge this urgent message']);
  assert.deepEqual(escalationLines(state, { me: 'u-derm', acknowledged: true, fmt }), []);
  assert.deepEqual(escalationLines(state, { me: 'u-sender', acknowledged: false, fmt }), []);
});

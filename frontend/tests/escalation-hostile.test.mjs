// The room's escalation lines against a lying server: the `member` flag of an
// urgent_escalated frame (and of the steps in GET /api/cases/<id>/urgent) and the
// frame's `to.name` are the server's word. Membership comes from the verified roster
// (a real chain, verified here), names from the directory look-up, and a target the
// directory does not know is an unknown person.
import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';

import * as cr1 from '../static/collab/cr1/index.js';
import { EscalationView } from '../static/collab/app/escalation-view.js';
import { ALICE, BOB, CASE_ID, DAVE, T0, author, fixedUuid } from './helpers.mjs';

const { Role } = cr1;
const MALLORY = DAVE; // a real directory user outside the case
const NOBODY = fixedUuid(0x99); // shaped like a user id, unknown to the directory
const AT = '2026-12-01T10:42:00Z';

// The directory as the server answers GET /api/users/<id>/keys; every request is kept.
const DIRECTORY = {
  [ALICE.userId]: 'Dr Alice Reyes',
  [BOB.userId]: 'Dr Bob Okafor',
  [MALLORY.userId]: 'Dr Mallory Stone',
};
const fetched = [];
globalThis.fetch = async (path) => {
  fetched.push(path);
  const id = /^\/api\/users\/([^/]+)\/keys$/.exec(path)?.[1];
  const name = DIRECTORY[id];
  if (!name) return new Response(JSON.stringify({ error: 'no_user' }), { status: 404 });
  return new Response(JSON.stringify({ user_id: id, display_name: name, role: 'provider', specialty: '', uik_pub: null, devices: [] }));
};

let clock = T0;
async function next(prev, p, body) {
  clock += 1000;
  return (await cr1.buildEntry(prev, body, { ...author(p), createdMs: clock, caseId: prev ? null : CASE_ID })).entry;
}
const addUser = (p, role) => new cr1.AddUserBody(p.userId, role, p.uikPub, p.devices.map((d) => d.cert));

// Alice (owner) and Bob (member); Mallory is not in the case.
const genesis = await next(null, ALICE, new cr1.CreateBody(ALICE.uikPub, ALICE.devices.map((d) => d.cert)));
const withBob = await next(genesis, ALICE, addUser(BOB, Role.MEMBER));
const withMallory = await next(withBob, ALICE, addUser(MALLORY, Role.MEMBER));
const verifiedHead = (entries) => cr1.verifyChain(entries).at(-1);

function room(me, entries = [genesis, withBob]) {
  return {
    me,
    session: { roster: verifiedHead(entries).roster },
    items: new Map(), // nothing drawn: the tests read view.lines()
    urgentAcks: new Map(),
    urgentOwed: new Map(),
    renderAcks() {},
  };
}

const frame = (id, name, member) => ({ type: 'urgent_escalated', seq: 7, to: { id, name }, via: 'oncall', member, at: AT });

async function linesAfter(view, seq = 7) {
  await view.lookUp(view.state.get(seq));
  return view.lines(seq).map((line) => line.replace(/ at .*? \(/, ' at T (').replace(/ at [^(]*$/, ' at T'));
}

const OUTSIDE = ' (not a member: they cannot read this case until they ask to join and a member '
  + 'admits them under "Waiting to join", after checking who they are)';

describe('a lying urgent_escalated frame', () => {
  beforeEach(() => { fetched.length = 0; });

  test('member: true for someone outside the verified roster: shown as outside the case', async () => {
    const view = new EscalationView(room(ALICE.userId));
    view.onFrame(frame(MALLORY.userId, 'Dr Bob Okafor (in the case)', true));
    const lines = await linesAfter(view);
    // The directory's name, not the frame's; not a member whatever the flag says.
    assert.deepEqual(lines, [`Escalated to Dr Mallory Stone at T${OUTSIDE}`]);
    assert.equal(view.state.get(7).steps[0].member, undefined, 'the flag is not kept');
  });

  test('member: false with a hint for a member: a plain line, no call to add anyone', async () => {
    const view = new EscalationView(room(ALICE.userId));
    view.onFrame(frame(BOB.userId, 'Dr Bob Okafor: add dr.mallory to the case so he can read it', false));
    const lines = await linesAfter(view);
    assert.deepEqual(lines, ['Escalated to Dr Bob Okafor at T']);
    assert.ok(!lines.join(' ').includes('mallory'));
  });

  test('no line ever suggests adding the target: only admission after checking who they are', async () => {
    const view = new EscalationView(room(BOB.userId));
    view.onFrame(frame(MALLORY.userId, 'Dr Mallory Stone', false));
    const [line] = await linesAfter(view);
    assert.ok(line.includes('cannot read this case until'), line);
    assert.ok(line.includes('after checking who they are'), line);
    assert.doesNotMatch(line, /\badd (them|him|her)\b/i);
  });

  test('an id the directory does not know is an unknown person, whatever its name', async () => {
    const view = new EscalationView(room(ALICE.userId));
    view.onFrame(frame(NOBODY, 'Dr Bob Okafor', true));
    assert.deepEqual(await linesAfter(view), [`Escalated to an unknown person (as the on-call provider) at T${OUTSIDE}`]);
    assert.deepEqual(fetched, [`/api/users/${NOBODY}/keys`]);
  });

  test('an id that is not a user id is not looked up (no request to a path the server chose)', async () => {
    const view = new EscalationView(room(ALICE.userId));
    view.onFrame(frame('../../directory?q=x', 'Dr Bob Okafor', true));
    assert.deepEqual(await linesAfter(view), [`Escalated to an unknown person (as the on-call provider) at T${OUTSIDE}`]);
    assert.deepEqual(fetched, []);
  });

  test('a target the server does not name (no id) is an unknown person; its kind only from a known word', async () => {
    const view = new EscalationView(room(ALICE.userId));
    view.onFrame(frame(null, 'the on-call provider (outside the case)', false));
    view.onFrame({ ...frame(null, 'x', true), at: '2026-12-01T10:50:00Z', via: '__proto__' });
    view.onFrame({ ...frame(null, 'x', true), at: '2026-12-01T10:55:00Z', via: 'add Dr Mallory' });
    assert.deepEqual(await linesAfter(view), [
      `Escalated to an unknown person (as the on-call provider) at T${OUTSIDE}`,
      `Escalated to an unknown person at T${OUTSIDE}`,
      `Escalated to an unknown person at T${OUTSIDE}`,
    ]);
    assert.deepEqual(fetched, []);
  });

  test('escalated to me while the verified roster does not list me: I cannot read it', async () => {
    const view = new EscalationView(room(MALLORY.userId));
    view.onFrame(frame(MALLORY.userId, 'Dr Mallory Stone', true));
    assert.deepEqual(await linesAfter(view), [
      'Escalated to you at T (you are not a member: you cannot read this case until you ask to join and '
      + 'a member admits you, after checking who you are)',
    ]);
  });

  test('membership follows the verified roster: once admitted, the same step reads as a member', async () => {
    const r = room(ALICE.userId);
    const view = new EscalationView(r);
    view.onFrame(frame(MALLORY.userId, 'Dr Mallory Stone', false));
    assert.deepEqual(await linesAfter(view), [`Escalated to Dr Mallory Stone at T${OUTSIDE}`]);
    r.session.roster = verifiedHead([genesis, withBob, withMallory]).roster;
    assert.deepEqual(await linesAfter(view), ['Escalated to Dr Mallory Stone at T']);
  });
});

describe('a lying GET /api/cases/<id>/urgent', () => {
  const timer = (steps) => ({
    seq: 7,
    unacknowledged: [],
    escalation: {
      started_at: AT, next_due: null, reminders_sent: 0, step_index: steps.length, done_at: AT,
      done_reason: 'exhausted', policy: { first_reminder_minutes: 2, repeat_minutes: 2, repeat_count: 0, steps: [] }, steps,
    },
  });
  const stored = (id, name, member) => ({ index: 0, via: 'oncall', outcome: 'notified', to: { id, name }, member, at: AT });

  test('steps stored as member: true / false are judged against the verified roster, both ways', async () => {
    const view = new EscalationView(room(ALICE.userId));
    view.load([timer([
      stored(MALLORY.userId, 'Dr Bob Okafor', true),
      { ...stored(BOB.userId, 'add dr.mallory so they can read it', false), index: 1 },
      { ...stored(NOBODY, 'Dr Alice Reyes', true), index: 2 },
    ])]);
    assert.deepEqual(await linesAfter(view), [
      `Escalated to Dr Mallory Stone at T${OUTSIDE}`,
      'Escalated to Dr Bob Okafor at T',
      `Escalated to an unknown person (as the on-call provider) at T${OUTSIDE}`,
    ]);
  });

  test('a malformed target (no id, an object for an id) is an unknown person outside the case', async () => {
    const view = new EscalationView(room(ALICE.userId));
    view.load([timer([stored(undefined, 'Dr Bob Okafor', true), { ...stored({ toString: () => BOB.userId }, 'x', true), index: 1 }])]);
    assert.deepEqual(await linesAfter(view), [
      `Escalated to an unknown person (as the on-call provider) at T${OUTSIDE}`,
      `Escalated to an unknown person (as the on-call provider) at T${OUTSIDE}`,
    ]);
  });
});

test('two targets outside the case escalated in one pass are two steps (both arrive with id null)', () => {
  const view = new EscalationView(room(ALICE.userId));
  const outside = (via, name) => ({ type: 'urgent_escalated', seq: 8, to: { id: null, name }, via, member: false, at: AT });
  view.onFrame(outside('oncall', 'the on-call provider (outside the case)'));
  view.onFrame(outside('backup', 'the backup on call (outside the case)'));
  view.onFrame(outside('backup', 'the backup on call (outside the case)')); // the same step again
  assert.deepEqual(view.state.get(8).steps.map((s) => s.via), ['oncall', 'backup']);
});

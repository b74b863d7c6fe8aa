// Receipts per recipient (app/receipts.js): stored marks after a reload, live frames,
// marks that only move forward, and the debounced delivered reports.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { DeliveredReporter, Receipts } from '../static/collab/app/receipts.js';

const ME = 'u-me';
const GOLD = 'u-gold';
const SAM = 'u-sam';
const NAMES = { [GOLD]: 'Dr Gold', [SAM]: 'Sam Patient', [ME]: 'me' };
const nameOf = (u) => NAMES[u] ?? u;

function stored() {
  return {
    case: 'c', last_seq: 5,
    members: [
      { user: ME, read: null, delivered: null },
      { user: GOLD, read: { up_to: 4, at: '2026-01-01T10:00:00+00:00' }, delivered: { up_to: 5, at: '2026-01-01T10:01:00+00:00' } },
      { user: SAM, read: null, delivered: { up_to: 3, at: '2026-01-01T09:00:00+00:00' } },
    ],
    urgent: [{ seq: 2, acknowledged: [{ user: GOLD, at: '2026-01-01T09:30:00+00:00' }] }],
  };
}

test('stored marks give each recipient their state after a reload', () => {
  const r = new Receipts(ME);
  r.load(stored());
  assert.equal(r.summary(3, nameOf), 'Read by Dr Gold · delivered to Sam Patient');
  assert.equal(r.summary(2, nameOf), 'Acknowledged by Dr Gold · delivered to Sam Patient');
  assert.equal(r.summary(5, nameOf), 'Delivered to Dr Gold · not yet delivered to Sam Patient');
  assert.deepEqual(r.recipients(), [GOLD, SAM]); // never the sender
});

test('live frames move marks forward only; a stale answer never takes one back', () => {
  const r = new Receipts(ME);
  r.load(stored());
  assert.equal(r.noteRead(SAM, 5), true);
  assert.equal(r.noteRead(SAM, 4), false);
  assert.equal(r.noteDelivered(GOLD, 2), false);
  r.load(stored()); // an older answer after the live frame
  assert.equal(r.stateOf(SAM, 5), 'read');
  assert.equal(r.summary(5, nameOf), 'Read by Sam Patient · delivered to Dr Gold');
  assert.equal(r.noteAck(5, SAM), true);
  assert.equal(r.noteAck(5, SAM), false);
  assert.equal(r.stateOf(SAM, 5), 'acknowledged');
});

test('bad marks are ignored', () => {
  const r = new Receipts(ME);
  for (const bad of ['3', 1.5, null, -1, 0]) assert.equal(r.noteDelivered(GOLD, bad), false);
  assert.equal(r.noteRead(42, 3), false);
  r.load({ members: 'nope' });
  assert.deepEqual(r.members, []);
});

test('alone in the case a stored message reads "Delivered"', () => {
  const r = new Receipts(ME);
  r.load({ case: 'c', last_seq: 1, members: [{ user: ME, read: null, delivered: null }], urgent: [] });
  assert.equal(r.summary(1, nameOf), 'Delivered');
});

function clock() {
  const timers = new Map();
  let next = 1;
  return {
    setTimer: (fn) => { timers.set(next, fn); return next++; },
    clearTimer: (id) => timers.delete(id),
    fire: () => { const fns = [...timers.values()]; timers.clear(); fns.forEach((fn) => fn()); },
    pending: () => timers.size,
  };
}

test('delivered reports are debounced to the highest seq and never go back', () => {
  const c = clock();
  const posted = [];
  const reporter = new DeliveredReporter((f) => { posted.push(f); return true; }, c);
  for (const seq of [3, 1, 7, 5]) reporter.note(seq);
  assert.equal(c.pending(), 1);
  c.fire();
  assert.deepEqual(posted, [{ type: 'delivered', up_to: 7 }]);
  reporter.note(6); // already covered: nothing to send
  assert.equal(c.pending(), 0);
  reporter.note(8);
  c.fire();
  assert.deepEqual(posted.map((f) => f.up_to), [7, 8]);
});

test('a report the closed socket could not take goes with the next one', () => {
  const c = clock();
  const posted = [];
  let open = false;
  const reporter = new DeliveredReporter((f) => { if (open) posted.push(f); return open; }, c);
  reporter.note(4);
  c.fire();
  assert.deepEqual(posted, []);
  open = true;
  reporter.note(4);
  c.fire();
  assert.deepEqual(posted, [{ type: 'delivered', up_to: 4 }]);
});

test('the default timers are called as plain functions (a method call of the browser\'s setTimeout throws)', async () => {
  const posted = [];
  const strict = globalThis.setTimeout;
  globalThis.setTimeout = function guarded(fn, ms) {
    if (this !== undefined && this !== globalThis) throw new TypeError('Illegal invocation');
    return strict(fn, ms);
  };
  try {
    const reporter = new DeliveredReporter((f) => { posted.push(f); return true; }, { delayMs: 1 });
    reporter.note(2);
    await new Promise((ok) => strict(ok, 20));
  } finally {
    globalThis.setTimeout = strict;
  }
  assert.deepEqual(posted, [{ type: 'delivered', up_to: 2 }]);
});

// Active time: counted only while the tab is visible and there was input in the last
// 60 s; batches of whole minutes, the rest rounded when leaving. A frozen clock: every
// time is given explicitly.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ActiveTime, IDLE_MS } from '../static/collab/app/active-time.js';
import { isValid, timeEntryBody } from '../static/collab/app/consult.js';

const S = 1000;
const M = 60 * S;
const T = 1_764_633_600_000;

/** Input every 10 s from `from` to `to` (inclusive). */
function typing(clock, from, to) {
  for (let at = from; at <= to; at += 10 * S) clock.input(at);
}

test('continuous input counts every second', () => {
  const clock = new ActiveTime();
  typing(clock, T, T + 3 * M);
  assert.equal(clock.pending(T + 3 * M), 3 * M);
});

test('after the last input only the idle cutoff counts', () => {
  const clock = new ActiveTime();
  clock.input(T);
  assert.equal(clock.pending(T + 10 * M), IDLE_MS);
  // Input again after the idle stretch: counting restarts there, the gap never counts.
  clock.input(T + 20 * M);
  assert.equal(clock.pending(T + 20 * M + 30 * S), IDLE_MS + 30 * S);
});

test('a hidden tab never counts, even with recent input', () => {
  const clock = new ActiveTime();
  clock.input(T);
  clock.visibility(false, T + 20 * S);
  assert.equal(clock.pending(T + 50 * S), 20 * S);
  clock.input(T + 55 * S); // a hidden tab gets no input, but if it did it would not count
  assert.equal(clock.pending(T + 58 * S), 20 * S);
  clock.visibility(true, T + 2 * M);
  assert.equal(clock.pending(T + 3 * M), 20 * S); // visible but idle: nothing more
  clock.input(T + 3 * M);
  assert.equal(clock.pending(T + 3 * M + 40 * S), 60 * S);
});

test('no input at all counts nothing', () => {
  const clock = new ActiveTime();
  clock.visibility(true, T);
  assert.equal(clock.pending(T + 60 * M), 0);
  assert.equal(clock.take(T + 60 * M, { final: true }), null);
});

test('a periodic batch takes whole minutes and carries the rest', () => {
  const clock = new ActiveTime();
  typing(clock, T, T + 4 * M);
  assert.equal(clock.due(T + 4 * M), false);
  typing(clock, T + 4 * M + 10 * S, T + 5 * M + 40 * S);
  assert.equal(clock.due(T + 5 * M + 40 * S), true);
  const entry = clock.take(T + 5 * M + 40 * S);
  assert.deepEqual(entry, { minutes: 5, startMs: T, endMs: T + 5 * M + 40 * S });
  assert.equal(clock.pending(T + 5 * M + 40 * S), 40 * S);
  typing(clock, T + 5 * M + 50 * S, T + 6 * M + 10 * S);
  const last = clock.take(T + 6 * M + 10 * S, { final: true });
  assert.deepEqual(last, { minutes: 1, startMs: T + 5 * M, endMs: T + 6 * M + 10 * S });
  assert.equal(clock.pending(T + 6 * M + 10 * S), 0);
});

test('leaving rounds to the nearest minute and drops under 30 s', () => {
  let clock = new ActiveTime();
  typing(clock, T, T + 2 * M + 30 * S);
  assert.equal(clock.take(T + 2 * M + 30 * S, { final: true }).minutes, 3);
  clock = new ActiveTime();
  typing(clock, T, T + 20 * S);
  assert.equal(clock.take(T + 20 * S, { final: true }), null);
});

test('every entry it makes is a valid active time_entry', () => {
  const clock = new ActiveTime();
  let at = T;
  const entries = [];
  for (let round = 0; round < 40; round++) {
    typing(clock, at, at + (round % 7) * M + 13 * S);
    at += (round % 7) * M + 13 * S + (round % 3) * 2 * M;
    const entry = clock.take(at, { final: round % 5 === 4 });
    if (entry) entries.push(entry);
  }
  assert.ok(entries.length > 5);
  for (const e of entries) {
    assert.ok(isValid('time_entry', timeEntryBody({ kind: 'active', minutes: e.minutes, startMs: e.startMs, endMs: e.endMs })), JSON.stringify(e));
  }
});

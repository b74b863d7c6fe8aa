// CaseSession verifies each log entry once (app/casestate.js): the memo keeps the
// verified head (epoch and hash), a later load takes the entries up to it by their hash
// links only and verifies only the newer ones; a server that rewrites history below the
// kept head is caught (fork), one that rolls it back too (stale_head). Same scenarios
// as tests/client/test_case_state_head.py.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import * as cr1 from '../static/collab/cr1/index.js';
import { forgetSigners, useDevice } from '../static/collab/app/api.js';
import { CaseSession, linkedChain } from '../static/collab/app/casestate.js';
import { ALICE, BOB, CASE_ID, T0, author, rejectsCode, throwsCode } from './helpers.mjs';

const next = async (prev, body, ms) => (await cr1.buildEntry(prev, body, {
  ...author(ALICE), createdMs: T0 + ms, caseId: prev ? null : CASE_ID,
})).entry;

/** genesis, add Bob, then rotations up to epoch `n`; from epoch `from` on, built on
 * `base` (another branch) when given. */
async function chainOf(n, { base = null, from = n + 1, salt = 0 } = {}) {
  const out = [];
  out.push(base ? base[0] : await next(null, new cr1.CreateBody(ALICE.uikPub, [ALICE.d.cert]), 0));
  out.push(base && from > 1 ? base[1] : await next(out[0], new cr1.AddUserBody(BOB.userId, cr1.Role.MEMBER, BOB.uikPub, [BOB.d.cert]), 1));
  for (let e = 2; e <= n; e++) {
    out.push(base && e < from ? base[e] : await next(out[e - 1], new cr1.RotateBody(), e + salt));
  }
  return out;
}

/** The log endpoint in pages of `size` entries with `more`. */
function serve(entries, size = 500) {
  const server = { entries, gets: 0 };
  globalThis.fetch = async (url, init = {}) => {
    const u = new URL(url, 'http://localhost');
    assert.ok(u.pathname.endsWith('/log') && (init.method ?? 'GET') === 'GET', `unexpected ${u.pathname}`);
    server.gets += 1;
    const after = Number(u.searchParams.get('after'));
    const rest = server.entries.filter((e) => Number(e.epoch) > after);
    const json = { entries: rest.slice(0, size).map((e) => ({ entry: cr1.b64e(e.encode()) })), more: rest.length > size };
    return { status: 200, ok: true, headers: new Map(), json: async () => json };
  };
  return server;
}

function session(memo = { headEpoch: -1, headHash: '' }) {
  const dev = { userId: BOB.userId, deviceId: BOB.d.deviceId, signer: BOB.d.dskSeed, dxkSecret: BOB.d.dxkSecret };
  forgetSigners();
  useDevice(dev);
  const s = new CaseSession(CASE_ID, dev);
  s.memo = { senderSeq: 0, lastSeq: 0, backedUp: -1, ...memo };
  s.saveMemo = async () => {};
  return s;
}

const kept = (entry) => ({ headEpoch: Number(entry.epoch), headHash: cr1.b64e(entry.entryHash()) });

test('a later load verifies only the entries above the head it kept', async () => {
  // Epoch 2 carries no valid signature: a load that verified it again would refuse it.
  const honest = await chainOf(2);
  const raw = honest[2].encode();
  raw.fill(0, raw.length - 64);
  const unsigned = cr1.LogEntry.decode(raw);
  const e3 = await next(unsigned, new cr1.RotateBody(), 3);
  const e4 = await next(e3, new cr1.RotateBody(), 4);
  const log = [honest[0], honest[1], unsigned, e3, e4];
  serve(log, 2);
  await rejectsCode(session().sync(), 'bad_signature'); // from scratch: every entry verified
  const s = session(kept(e3));
  const head = await s.sync();
  assert.equal(Number(head.epoch), 4); // e4 verified on top of the kept e3
  assert.deepEqual([...s.chain.keys()].sort(), [0, 1, 2, 3, 4]);
  assert.deepEqual([...s.keys.keys()].sort(), [1, 2, 3, 4]); // Bob's keys from his wraps
  assert.deepEqual(s.memo.headEpoch, 4);
});

test('a history rewritten below the kept head is a fork', async () => {
  const honest = await chainOf(4);
  const other = await chainOf(5, { base: honest, from: 2, salt: 100 }); // validly signed branch
  serve(other);
  await session().sync(); // without the kept head it verifies: only the head catches it
  await rejectsCode(session(kept(honest[4])).sync(), 'fork');
  // One entry swapped below the head, the head itself served unchanged.
  serve([...honest.slice(0, 2), other[2], ...honest.slice(3)]);
  await rejectsCode(session(kept(honest[4])).sync(), 'fork');
  throwsCode(() => linkedChain([...honest, other[2]], { epoch: 4, hash: honest[4].entryHash() }), 'fork');
  // The honest log still loads.
  serve(honest, 2);
  assert.equal(Number((await session(kept(honest[4])).sync()).epoch), 4);
});

test('a log rolled back, or with a gap, below the kept head is refused', async () => {
  const honest = await chainOf(4);
  serve(honest.slice(0, 3));
  await rejectsCode(session(kept(honest[3])).sync(), 'stale_head');
  const head = { epoch: 3, hash: honest[3].entryHash() };
  throwsCode(() => linkedChain([honest[0], ...honest.slice(2)], head), 'wrong_epoch');
  throwsCode(() => linkedChain([...honest.slice(0, 3), honest[4]], head), 'wrong_epoch');
});

test('sync follows more across byte-capped pages', async () => {
  const honest = await chainOf(6);
  const server = serve(honest, 2);
  const s = session();
  assert.equal(Number((await s.sync()).epoch), 6);
  assert.equal(server.gets, 4); // 2 + 2 + 2 + 1 entries; the last page says no more
});

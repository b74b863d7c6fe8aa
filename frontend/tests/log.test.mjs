// Membership log round trips: build a chain through every action, open the
// wraps, share history, and the rejections of verifyEntry / verifyChain.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import * as cr1 from '../static/collab/cr1/index.js';
import {
  ALICE, BOB, CAROL, CASE_ID, DAVE, T0, author, hx, person, seed, throwsAsync, throwsCode,
} from './helpers.mjs';

const { Role } = cr1;
let clock = T0;

async function next(prev, p, body, device = p.d) {
  clock += 1000;
  return await cr1.buildEntry(prev, body, { ...author(p, device), createdMs: clock, caseId: prev ? null : CASE_ID });
}

const addUser = (p, role) => new cr1.AddUserBody(p.userId, role, p.uikPub, p.devices.map((d) => d.cert));

/** Like the Python vector generator's forge(): sign arbitrary fields. */
async function forge(prev, p, action, body, roster, overrides = {}) {
  return await cr1.sealEntry({
    signer: p.d.dskSeed,
    caseId: prev.caseId,
    epoch: prev.epoch + 1,
    prevHash: prev.entryHash(),
    authorUserId: p.userId,
    authorDeviceId: p.d.deviceId,
    createdMs: T0,
    action,
    actionBody: body.encode(),
    roster,
    epochKey: seed('neg/key'),
    epkSecret: seed('neg/epk'),
    ...overrides,
  });
}

async function genesis() {
  return await next(null, ALICE, new cr1.CreateBody(ALICE.uikPub, ALICE.devices.map((d) => d.cert)));
}

function allDevices() {
  return [ALICE, BOB, CAROL, DAVE].flatMap((p) => p.devices);
}

describe('a full chain through every action', async () => {
  const keys = [];
  const chain = [];
  const push = ({ entry, epochKey }) => {
    chain.push(entry);
    keys.push(epochKey);
    return entry;
  };
  // Bob's second device, certified by Bob's UIK.
  const bob2 = person('bob', 2, 2).devices[1];

  test('create, add users, rotate, devices, roles, history, leave, removal', async () => {
    let e = push(await genesis());
    assert.equal(e.epoch, 0);
    assert.deepEqual(e.roster.devices.map((d) => d.deviceId), ALICE.devices.map((d) => d.deviceId));
    e = push(await next(e, ALICE, addUser(BOB, Role.MEMBER)));
    e = push(await next(e, ALICE, addUser(DAVE, Role.ADMIN)));
    e = push(await next(e, DAVE, addUser(CAROL, Role.PATIENT)));
    assert.equal(e.roster.user(CAROL.userId).sinceEpoch, 3);
    e = push(await next(e, CAROL, new cr1.RotateBody())); // a patient may rotate
    e = push(await next(e, BOB, new cr1.AddDeviceBody(bob2.cert)));
    assert.equal(e.roster.devicesOf(BOB.userId).length, 2);
    e = push(await next(e, BOB, new cr1.RemoveDeviceBody(BOB.userId, bob2.deviceId)));
    assert.equal(e.roster.devicesOf(BOB.userId).length, 1);
    e = push(await next(e, ALICE, new cr1.SetRoleBody(BOB.userId, Role.ADMIN)));
    assert.equal(e.roster.user(BOB.userId).role, Role.ADMIN);
    // Bob (now admin) shares epochs 1 and 2 with Carol's device.
    const hist = cr1.makeHistoryBody(CASE_ID, [[CAROL.d.cert, 2, keys[2]], [CAROL.d.cert, 1, keys[1]]]);
    assert.deepEqual(hist.items.map((w) => w.epoch), [1, 2]); // sorted
    e = push(await next(e, BOB, hist));
    const shared = cr1.openHistory(e, CAROL.d.deviceId, CAROL.d.dxkSecret, chain);
    assert.deepEqual([...shared.keys()], [1, 2]);
    assert.deepEqual(shared.get(1), keys[1]);
    assert.deepEqual(shared.get(2), keys[2]);
    assert.equal(cr1.openHistory(e, BOB.d.deviceId, BOB.d.dxkSecret, chain).size, 0);
    // Carol leaves: she signs a request, Bob commits it.
    const leave = await cr1.signLeave(CAROL.d.dskSeed, CASE_ID, CAROL.userId, CAROL.d.deviceId, e.epoch);
    e = push(await next(e, BOB, new cr1.RemoveUserBody(CAROL.userId, leave)));
    assert.equal(e.roster.user(CAROL.userId), null);
    throwsCode(() => cr1.openWrap(e, CAROL.d.deviceId, CAROL.d.dxkSecret), 'wraps_mismatch');
    e = push(await next(e, ALICE, new cr1.RemoveUserBody(DAVE.userId)));
    e = push(await next(e, ALICE, new cr1.RotateBody(), ALICE.devices[1]));
    assert.equal(e.epoch, chain.length - 1);
  });

  test('every entry verifies as a chain, from genesis and after a trusted head', async () => {
    assert.equal(cr1.verifyChain(chain).length, chain.length);
    const shuffled = [...chain].reverse().concat(chain.slice(0, 3)); // order and duplicates do not matter
    assert.equal(cr1.verifyChain(shuffled).length, chain.length);
    assert.equal(cr1.verifyChain(chain.slice(5), { trustedHead: chain[4] }).length, chain.length - 5);
    assert.equal(cr1.verifyChain(chain, { trustedHead: chain[4] }).length, chain.length - 5);
  });

  test('every roster device opens every wrap; the key matches key_commit', async () => {
    chain.forEach((entry, i) => {
      for (const dev of entry.roster.devices) {
        const mine = [...allDevices(), bob2].find((d) => d.deviceId === dev.deviceId);
        assert.deepEqual(cr1.openWrap(entry, dev.deviceId, mine.dxkSecret), keys[i]);
      }
    });
    throwsCode(() => cr1.openWrap(chain[1], BOB.d.deviceId, ALICE.d.dxkSecret), 'decrypt_failed');
  });

  test('encode/decode and wire round trips are exact', async () => {
    for (const entry of chain) {
      const bytes = entry.encode();
      assert.deepEqual(cr1.LogEntry.decode(bytes).encode(), bytes);
      const wire = JSON.parse(JSON.stringify(entry.toWire()));
      assert.deepEqual(cr1.LogEntry.fromWire(wire).encode(), bytes);
      assert.deepEqual(cr1.LogEntry.decode(bytes).body().encode(), entry.actionBody);
    }
  });

  test('a gap, a fork, a wrong head', async () => {
    throwsCode(() => cr1.verifyChain([chain[0], chain[2]]), 'wrong_epoch');
    throwsCode(() => cr1.verifyChain(chain.slice(1)), 'wrong_epoch');
    const { entry: other } = await next(chain[0], ALICE, addUser(DAVE, Role.ADMIN));
    throwsCode(() => cr1.verifyChain([...chain, other]), 'fork');
    throwsCode(() => cr1.verifyChain(chain.slice(1), { trustedHead: other }), 'fork');
    throwsCode(() => cr1.verifyChain(chain.slice(2), { trustedHead: other }), 'stale_head');
    throwsCode(() => cr1.checkFork(chain[1], other), 'fork');
    throwsCode(() => cr1.verifyEntry(chain[1], chain[3]), 'wrong_epoch');
    throwsCode(() => cr1.verifyEntry(other, chain[2]), 'stale_head');
  });
});

describe('verifyEntry rejections', async () => {
  const { entry: e0 } = await genesis();
  const { entry: e1 } = await next(e0, ALICE, addUser(BOB, Role.MEMBER));

  test('genesis position checks', async () => {
    throwsCode(() => cr1.verifyEntry(null, e1), 'wrong_epoch');
    throwsCode(() => cr1.verifyEntry(null, e0.replace({ prevHash: new Uint8Array(64).fill(1) })), 'stale_head');
    const rotate0 = await cr1.sealEntry({
      signer: ALICE.d.dskSeed, caseId: CASE_ID, epoch: 0, prevHash: new Uint8Array(64),
      authorUserId: ALICE.userId, authorDeviceId: ALICE.d.deviceId, createdMs: T0,
      action: cr1.Action.ROTATE, actionBody: new Uint8Array(0), roster: e0.roster,
      epochKey: seed('k'), epkSecret: seed('x'),
    });
    throwsCode(() => cr1.verifyEntry(null, rotate0), 'bad_action');
    await throwsAsync(async () => await next(null, ALICE, new cr1.RotateBody()), 'bad_action');
    await throwsAsync(async () => await cr1.buildEntry(null, new cr1.RotateBody(), { ...author(ALICE), createdMs: T0 }), 'bad_field');
  });

  test('another case, a bad signature', async () => {
    const other = await forge(e1, ALICE, cr1.Action.ROTATE, new cr1.RotateBody(), e1.roster, { caseId: 'c0000000-0000-4000-8000-000000000002' });
    throwsCode(() => cr1.verifyEntry(e1, other), 'wrong_case');
    const good = await forge(e1, ALICE, cr1.Action.ROTATE, new cr1.RotateBody(), e1.roster);
    cr1.verifyEntry(e1, good);
    const sig = new Uint8Array(good.signature);
    sig[0] ^= 1;
    throwsCode(() => cr1.verifyEntry(e1, good.replace({ signature: sig })), 'bad_signature');
  });

  test('authorisation table', async () => {
    const { entry: e2 } = await next(e1, ALICE, addUser(DAVE, Role.ADMIN));
    const { entry: e3 } = await next(e2, DAVE, addUser(CAROL, Role.PATIENT));
    const carolRoster = (prev, p) => cr1.applyAction(prev.roster, { epoch: prev.epoch + 1, authorUserId: p.userId, body: addUser(CAROL, Role.PATIENT) });
    // A member may not add users.
    await throwsAsync(async () => cr1.verifyEntry(e2, await forge(e2, BOB, cr1.Action.ADD_USER, addUser(CAROL, Role.PATIENT), carolRoster(e2, BOB))), 'unauthorized_author');
    // An admin may not add an owner, nor grant or revoke owner, nor remove an owner.
    const addOwner = addUser(CAROL, Role.OWNER);
    await throwsAsync(async () => await next(e2, DAVE, addOwner), 'unauthorized_author');
    await throwsAsync(async () => await next(e2, DAVE, new cr1.SetRoleBody(BOB.userId, Role.OWNER)), 'unauthorized_author');
    await throwsAsync(async () => await next(e2, DAVE, new cr1.SetRoleBody(ALICE.userId, Role.ADMIN)), 'unauthorized_author');
    await throwsAsync(async () => await next(e2, DAVE, new cr1.RemoveUserBody(ALICE.userId)), 'unauthorized_author');
    await throwsAsync(async () => await next(e2, DAVE, new cr1.RemoveDeviceBody(ALICE.userId, ALICE.devices[1].deviceId)), 'unauthorized_author');
    await next(e2, DAVE, new cr1.SetRoleBody(BOB.userId, Role.PATIENT)); // an admin may demote a member
    // Members and patients may not remove others, set roles or share history.
    await throwsAsync(async () => await next(e3, BOB, new cr1.RemoveUserBody(CAROL.userId)), 'unauthorized_author');
    await throwsAsync(async () => await next(e3, CAROL, new cr1.SetRoleBody(BOB.userId, Role.ADMIN)), 'unauthorized_author');
    await throwsAsync(async () => await next(e3, BOB, new cr1.RemoveDeviceBody(CAROL.userId, CAROL.d.deviceId)), 'unauthorized_author');
    await throwsAsync(async () => await next(e3, BOB, cr1.makeHistoryBody(CASE_ID, [[CAROL.d.cert, 1, seed('k')]])), 'unauthorized_author');
    // A user adds only their own devices.
    const bob2 = person('bob', 2, 2).devices[1];
    await throwsAsync(async () => await next(e3, ALICE, new cr1.AddDeviceBody(bob2.cert)), 'unauthorized_author');
    // A removed member never authors the next key, even when allowed to remove.
    await throwsAsync(async () => await next(e3, DAVE, new cr1.RemoveUserBody(DAVE.userId)), 'unauthorized_author');
    // A device removing itself is not in the resulting roster either.
    await throwsAsync(async () => await next(e3, ALICE, new cr1.RemoveDeviceBody(ALICE.userId, ALICE.d.deviceId)), 'unauthorized_author');
    await next(e3, ALICE, new cr1.RemoveDeviceBody(ALICE.userId, ALICE.devices[1].deviceId));
    // Outsiders cannot author at all.
    const outsider = person('eve', 9);
    await throwsAsync(async () => cr1.verifyEntry(e3, await forge(e3, outsider, cr1.Action.ROTATE, new cr1.RotateBody(), e3.roster)), 'unauthorized_author');
  });

  test('leave requests', async () => {
    const { entry: e2 } = await next(e1, ALICE, addUser(CAROL, Role.PATIENT));
    const ok = await cr1.signLeave(CAROL.d.dskSeed, CASE_ID, CAROL.userId, CAROL.d.deviceId, 2);
    await next(e2, BOB, new cr1.RemoveUserBody(CAROL.userId, ok));
    // Signed by someone else's device, or with a bad signature.
    const wrongDevice = await cr1.signLeave(BOB.d.dskSeed, CASE_ID, CAROL.userId, BOB.d.deviceId, 2);
    await throwsAsync(async () => await next(e2, BOB, new cr1.RemoveUserBody(CAROL.userId, wrongDevice)), 'unauthorized_author');
    const forgedSig = new cr1.LeaveRequest(CAROL.d.deviceId, 2, cr1.sign(BOB.d.dskSeed, new Uint8Array(1)));
    await throwsAsync(async () => await next(e2, BOB, new cr1.RemoveUserBody(CAROL.userId, forgedSig)), 'bad_signature');
    // Before the user joined (replay after re-admission) or from the future.
    const early = await cr1.signLeave(CAROL.d.dskSeed, CASE_ID, CAROL.userId, CAROL.d.deviceId, 1);
    await throwsAsync(async () => await next(e2, BOB, new cr1.RemoveUserBody(CAROL.userId, early)), 'unauthorized_author');
    const late = await cr1.signLeave(CAROL.d.dskSeed, CASE_ID, CAROL.userId, CAROL.d.deviceId, 3);
    await throwsAsync(async () => await next(e2, BOB, new cr1.RemoveUserBody(CAROL.userId, late)), 'unauthorized_author');
    // The leaver cannot commit their own removal.
    await throwsAsync(async () => await next(e2, CAROL, new cr1.RemoveUserBody(CAROL.userId, ok)), 'unauthorized_author');
  });

  test('impossible transitions are bad_action', async () => {
    await throwsAsync(async () => await next(e1, ALICE, addUser(BOB, Role.MEMBER)), 'bad_action');
    await throwsAsync(async () => await next(e1, ALICE, new cr1.RemoveUserBody(CAROL.userId)), 'bad_action');
    await throwsAsync(async () => await next(e1, ALICE, new cr1.SetRoleBody(BOB.userId, Role.MEMBER)), 'bad_action');
    await throwsAsync(async () => await next(e1, ALICE, new cr1.RemoveDeviceBody(BOB.userId, ALICE.d.deviceId)), 'bad_action');
    await throwsAsync(async () => await next(e1, BOB, new cr1.AddDeviceBody(BOB.d.cert)), 'bad_action');
    await throwsAsync(async () => await next(e1, ALICE, new cr1.CreateBody(ALICE.uikPub, [ALICE.d.cert])), 'bad_action');
    await throwsAsync(async () => await next(e1, ALICE, new cr1.ShareHistoryBody(seed('h'), [])), 'bad_action');
    await throwsAsync(async () => await next(e1, ALICE, cr1.makeHistoryBody(CASE_ID, [[BOB.d.cert, 2, seed('k')]])), 'bad_action'); // not an earlier epoch
    await throwsAsync(async () => await next(e1, ALICE, cr1.makeHistoryBody(CASE_ID, [[CAROL.d.cert, 0, seed('k')]])), 'bad_action');
  });

  test('roster, wraps and body malformations', async () => {
    // Rotate that sneaks in a device: roster_mismatch.
    const carol = cr1.applyAction(e1.roster, { epoch: 2, authorUserId: ALICE.userId, body: addUser(CAROL, Role.PATIENT) });
    await throwsAsync(async () => cr1.verifyEntry(e1, await forge(e1, ALICE, cr1.Action.ROTATE, new cr1.RotateBody(), carol)), 'roster_mismatch');
    // Unsorted roster: bad_roster.
    const unsorted = new cr1.Roster([...e1.roster.users].reverse(), e1.roster.devices);
    await throwsAsync(async () => cr1.verifyEntry(e1, await forge(e1, ALICE, cr1.Action.ROTATE, new cr1.RotateBody(), unsorted)), 'bad_roster');
    // A certificate not signed by its user's UIK.
    const fake = cr1.makeDeviceCert(ALICE.uikSeed, BOB.userId, BOB.d.deviceId, BOB.d.dskPub, BOB.d.dxkPub, 1);
    const fakeRoster = new cr1.Roster(e1.roster.users, e1.roster.devices.map((d) => (d.deviceId === BOB.d.deviceId ? fake : d)));
    await throwsAsync(async () => cr1.verifyEntry(e1, await forge(e1, ALICE, cr1.Action.ROTATE, new cr1.RotateBody(), fakeRoster)), 'bad_certificate');
    // Wraps: one missing, or the wrong length.
    const good = await forge(e1, ALICE, cr1.Action.ROTATE, new cr1.RotateBody(), e1.roster);
    const resign = (changes) => {
      const draft = good.replace(changes);
      return draft.replace({ signature: cr1.sign(ALICE.d.dskSeed, draft.signedBytes()) });
    };
    throwsCode(() => cr1.verifyEntry(e1, resign({ wraps: good.wraps.slice(1) })), 'wraps_mismatch');
    const short = good.wraps.map((w, i) => (i ? w : new cr1.Wrap(w.deviceId, w.ciphertext.subarray(1))));
    throwsCode(() => cr1.verifyEntry(e1, resign({ wraps: short })), 'wraps_mismatch');
    // Non-canonical body bytes (trailing byte on a rotate).
    throwsCode(() => cr1.verifyEntry(e1, resign({ actionBody: new Uint8Array(1) })), 'bad_action');
    // Low-order epk.
    throwsCode(() => cr1.verifyEntry(e1, resign({ epk: new Uint8Array(32) })), 'low_order_key');
  });

  test('decode is exact', async () => {
    const bytes = e1.encode();
    throwsCode(() => cr1.LogEntry.decode(bytes.subarray(0, bytes.length - 1)), 'bad_length');
    throwsCode(() => cr1.LogEntry.decode(cr1.concat(bytes, new Uint8Array(1))), 'bad_length');
    const badTag = new Uint8Array(bytes);
    badTag[0] ^= 1;
    throwsCode(() => cr1.LogEntry.decode(badTag), 'bad_field');
    const badAction = new Uint8Array(bytes);
    badAction[8 + 16 + 8 + 64 + 16 + 16 + 8] = 10; // the action byte: no action 10
    throwsCode(() => cr1.LogEntry.decode(badAction), 'bad_action');
    throwsCode(() => cr1.parseBody(cr1.Action.REMOVE_USER, cr1.concat(cr1.uuidBytes(BOB.userId), new Uint8Array([2]))), 'bad_action');
  });

  test('fromWire is strict', async () => {
    const wire = e1.toWire();
    throwsCode(() => cr1.LogEntry.fromWire({ ...wire, epoch: 1.5 }), 'bad_field');
    throwsCode(() => cr1.LogEntry.fromWire({ ...wire, epoch: 2 ** 53 }), 'bad_field');
    throwsCode(() => cr1.LogEntry.fromWire({ ...wire, case_id: CASE_ID.toUpperCase() }), 'bad_field');
    throwsCode(() => cr1.LogEntry.fromWire({ ...wire, prev_hash: cr1.b64e(new Uint8Array(63)) }), 'bad_length');
    throwsCode(() => cr1.LogEntry.fromWire({ ...wire, action: 0 }), 'bad_action');
    throwsCode(() => cr1.LogEntry.fromWire({ ...wire, roster: [] }), 'bad_field');
    const { signature, ...missing } = wire;
    assert.ok(signature);
    throwsCode(() => cr1.LogEntry.fromWire(missing), 'bad_field');
  });

  test('u64 fields above 2^53 survive decode/encode (BigInt)', async () => {
    const big = await forge(e1, ALICE, cr1.Action.ROTATE, new cr1.RotateBody(), e1.roster, { createdMs: 2n ** 64n - 1n });
    cr1.verifyEntry(e1, big); // created_ms is informative only
    const back = cr1.LogEntry.decode(big.encode());
    assert.equal(back.createdMs, 2n ** 64n - 1n);
    assert.equal(hx(back.entryHash()), hx(big.entryHash()));
    throwsCode(() => back.toWire(), 'bad_field');
  });
});

// Writes the page makes by itself are marked background (X-Collab-Background: 1, so
// they do not postpone automatic logoff): the pin-book PUT (app/pinstore.js) and the
// invitation proofs (app/invite-secret.js); and api.js turns the option into the header.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import * as cr1 from '../static/collab/cr1/index.js';
import { inviteKeypair, verifyInviteProof } from '../static/collab/cr1/invite.js';
import { ApiError, api, forgetSigners } from '../static/collab/app/api.js';
import { postInviteProofs } from '../static/collab/app/invite-secret.js';
import { PinStore } from '../static/collab/app/pinstore.js';
import { ALICE, BOB, CAROL, CASE_ID, T0 } from './helpers.mjs';

const deviceOf = (p) => ({ userId: p.userId, deviceId: p.d.deviceId, uikSeed: p.uikSeed, cert: p.d.cert.toWire(), signer: cr1.seedSigner(p.d.dskSeed), dxkSecret: p.d.dxkSecret });

test('the pin-book PUT is a background request', async () => {
  const calls = [];
  const io = {
    api: async (method, path, options = {}) => {
      calls.push({ method, path, background: options.background === true });
      if (method === 'GET') throw new ApiError(404, { error: 'no_pins' });
      return { version: options.json.version };
    },
    savePins: async () => {},
    loadPins: async () => null,
  };
  const store = await PinStore.open(deviceOf(ALICE), io);
  store.book.observe(BOB.userId, BOB.uikPub, CASE_ID, T0);
  assert.equal(await store.sync(), true);
  assert.deepEqual(calls.map((c) => [c.method, c.background]), [['GET', false], ['PUT', true]]);
});

test('invitation proofs are posted as background requests, and still verify', async () => {
  const secret = new Uint8Array(32).fill(7);
  const { pub } = inviteKeypair(secret);
  const calls = [];
  const deleted = [];
  const io = {
    listInviteSecrets: async () => [{ id: 1, secret: secret.slice(), savedAt: Date.now() }],
    deleteInviteSecret: async (id) => { deleted.push(id); },
    api: async (method, path, options = {}) => {
      calls.push({ method, path, options });
      if (method === 'GET') {
        return { invitations: [{ id: 9, case: CASE_ID, invite_pub: cr1.b64e(pub), proof: null, join_status: 'pending' }] };
      }
      return {};
    },
  };
  const proved = await postInviteProofs(deviceOf(CAROL), io);
  assert.equal(proved.length, 1);
  const post = calls.find((c) => c.method === 'POST');
  assert.equal(post.path, '/api/invitations/9/proof');
  assert.equal(post.options.background, true);
  verifyInviteProof(pub, CASE_ID, CAROL.userId, CAROL.uikPub, cr1.b64d(post.options.json.proof_sig, 64));
  assert.deepEqual(deleted, [1]);
});

test('api() sends X-Collab-Background only for background requests', async () => {
  const seen = [];
  globalThis.fetch = async (url, init = {}) => {
    seen.push(init.headers['X-Collab-Background'] ?? null);
    return { status: 200, ok: true, headers: new Map(), json: async () => ({}) };
  };
  forgetSigners();
  await api('PUT', '/api/identity/pins', { json: {}, background: true });
  await api('POST', '/api/cases', { json: {} });
  assert.deepEqual(seen, ['1', null]);
});

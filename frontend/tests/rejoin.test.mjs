// A member readmitted after an identity reset: their rejoin request is listed although
// the roster still holds them (under the old key), and admitting it needs the same
// explicit acceptance of the changed key as any other admission.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  effectiveKind, openRequests, reasonText, reviewAdmission,
} from '../static/collab/app/trust/admission.js';
import { Role } from '../static/collab/cr1/index.js';
import { BOB, CAROL } from './helpers.mjs';

const rosterWith = (...ids) => ({ user: (id) => (ids.includes(id) ? {} : null) });

test('a rejoin request of a roster member is listed; other kinds from members are not', () => {
  const requests = [
    { id: 1, user: BOB.userId, kind: 'rejoin' },
    { id: 2, user: CAROL.userId, kind: 'claim' },
  ];
  const got = openRequests(requests, rosterWith(BOB.userId, CAROL.userId));
  assert.deepEqual(got.map((r) => r.id), [1]);
  assert.match(reasonText('rejoin'), /identity reset/);
});

test('a rejoin with a changed key is refused until the person accepts it', () => {
  const kind = effectiveKind({ kind: 'rejoin' }, Role.MEMBER);
  assert.equal(kind, 'rejoin');
  assert.deepEqual(reviewAdmission({ pin: 'changed', kind }).blockers, ['identity_changed']);
  assert.equal(reviewAdmission({ pin: 'changed', kind, acceptChanged: true }).allowed, true);
});

test("a patient's rejoin also needs the short code compared (no link binds the new key)", () => {
  const kind = effectiveKind({ kind: 'rejoin', role: 'patient' }, Role.PATIENT);
  assert.equal(kind, 'patient');
  const review = reviewAdmission({ pin: 'changed', kind, binding: 'unbound', acceptChanged: true });
  assert.deepEqual(review.blockers, ['patient_unbound']);
  assert.equal(reviewAdmission({ pin: 'changed', kind, binding: 'unbound', acceptChanged: true, codeCompared: true }).allowed, true);
});

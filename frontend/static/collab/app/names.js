// Display names of users, from GET /api/users/<id>/keys (cached per page).
// Patients may look up only themselves; others then show as "Member 1a2b3c4d".
// `listed: true` only on a user the directory answered for (not a hint or a fallback).

import { api } from './api.js';

const cache = new Map();
const known = new Map();
const hints = new Map(); // user id -> display name from another source (access log)
let selfOnly = null; // a patient may look up only themselves

/** Patients see no directory: names come from hints (the case's access log). */
export function restrictLookups(myUserId) {
  selfOnly = myUserId;
}

export function addNameHint(userId, name) {
  if (!userId || !name) return;
  hints.set(userId, name);
  if (!cache.has(userId) || known.get(userId)?.startsWith('Member ')) {
    known.set(userId, name);
    cache.set(userId, Promise.resolve({ id: userId, name, specialty: '', role: '' }));
  }
}

const fallback = (userId) => `Member ${userId.slice(0, 8)}`;

export function lookupUser(userId) {
  if (!cache.has(userId) && selfOnly && userId !== selfOnly) {
    const name = hints.get(userId) ?? fallback(userId);
    known.set(userId, name);
    cache.set(userId, Promise.resolve({ id: userId, name, specialty: '', role: '' }));
  }
  if (!cache.has(userId)) {
    cache.set(userId, api('GET', `/api/users/${userId}/keys`).then(
      (u) => ({ id: userId, name: u.display_name || fallback(userId), specialty: u.specialty ?? '', role: u.role, listed: true }),
      () => ({ id: userId, name: fallback(userId), specialty: '', role: '' }),
    ).then((u) => {
      known.set(userId, u.name);
      return u;
    }));
  }
  return cache.get(userId);
}

export async function nameOf(userId) {
  return (await lookupUser(userId)).name;
}

/** Synchronous best effort: the name if it was looked up already. */
export function knownName(userId) {
  if (!known.has(userId)) lookupUser(userId);
  return known.get(userId) ?? fallback(userId);
}

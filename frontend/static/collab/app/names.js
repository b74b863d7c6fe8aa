// Display names of users, from GET /api/users/<id>/keys (cached per page).
// Patients may look up only themselves; others then show as "Member 1a2b3c4d".

import { api } from './api.js';

const cache = new Map();
const known = new Map();

const fallback = (userId) => `Member ${userId.slice(0, 8)}`;

export function lookupUser(userId) {
  if (!cache.has(userId)) {
    cache.set(userId, api('GET', `/api/users/${userId}/keys`).then(
      (u) => ({ id: userId, name: u.display_name || fallback(userId), specialty: u.specialty ?? '', role: u.role }),
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

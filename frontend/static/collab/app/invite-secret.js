// The patient's side of an invitation bound by its link. The link's fragment
// (#k=<base64url secret>, never sent to the server) holds a 32-byte secret that
// derives the invite key the inviting clinician's device signed. The invitation
// page keeps the secret in IndexedDB (encrypted like the device keys) before its
// form posts; once this browser holds the patient's identity key, it signs the
// proof (cr1/invite.js) binding the patient's user id and identity key to the
// invitation, posts it, and forgets the secret.

import { b64e } from '../cr1/index.js';
import { SECRET_LEN, inviteKeypair, shortCode, signInviteProof } from '../cr1/invite.js';
import { ApiError, api } from './api.js';
import { uikPublic } from './identity.js';
import { deleteInviteSecret, listInviteSecrets, saveInviteSecret } from './keystore.js';

const STALE_MS = 30 * 24 * 3600 * 1000;
const IO = { api, listInviteSecrets, deleteInviteSecret };

/** RFC 4648 base64url without padding. */
export function base64url(bytes) {
  return b64e(bytes).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

export function fromBase64url(text) {
  if (typeof text !== 'string' || !/^[A-Za-z0-9_-]*$/.test(text)) return null;
  const std = text.replace(/-/g, '+').replace(/_/g, '/');
  const padded = std + '='.repeat((4 - (std.length % 4)) % 4);
  let bin;
  try {
    bin = atob(padded);
  } catch {
    return null;
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** The secret in a URL fragment ("#k=..."), or null. */
export function secretFromFragment(hash) {
  const params = new URLSearchParams(String(hash ?? '').replace(/^#/, ''));
  const secret = fromBase64url(params.get('k'));
  return secret && secret.length === SECRET_LEN ? secret : null;
}

/** Keep the fragment's secret on this browser; true if there was one. */
export async function keepFragmentSecret(hash) {
  const secret = secretFromFragment(hash);
  if (!secret) return false;
  const { pub } = inviteKeypair(secret);
  await saveInviteSecret(b64e(pub), secret);
  secret.fill(0);
  return true;
}

/**
 * For every kept secret whose invitation this patient accepted: sign and post the
 * proof, then forget the secret. Returns the invitations proved. Needs the identity
 * seed on this device (device.uikSeed). The page does this by itself, so the proofs
 * are background requests (no person's activity). io: {api, listInviteSecrets,
 * deleteInviteSecret} (api.js and keystore.js; replaced in node tests).
 */
export async function postInviteProofs(device, io = IO) {
  if (!device?.uikSeed) return [];
  const { api, listInviteSecrets, deleteInviteSecret } = io;
  const secrets = await listInviteSecrets();
  if (!secrets.length) return [];
  const { invitations } = await api('GET', '/api/invitations/mine');
  const uik = uikPublic(device.uikSeed);
  const proved = [];
  for (const { id, secret, savedAt } of secrets) {
    const { seed, pub } = inviteKeypair(secret);
    const inv = invitations.find((i) => i.invite_pub === b64e(pub));
    if (!inv) {
      if (Date.now() - savedAt > STALE_MS) await deleteInviteSecret(id);
      continue; // not accepted (yet) by this account
    }
    if (inv.proof || inv.join_status !== 'pending') {
      await deleteInviteSecret(id);
      continue;
    }
    const sig = signInviteProof(seed, inv.case, pub, device.userId, uik);
    try {
      await api('POST', `/api/invitations/${inv.id}/proof`, { json: { proof_sig: b64e(sig) }, background: true });
      proved.push(inv);
    } catch (err) {
      // Refused for good (bad proof, not pending): the secret is of no further use.
      if (!(err instanceof ApiError) || err.status >= 500 || err.code === 'no_identity') throw err;
    }
    await deleteInviteSecret(id);
    seed.fill(0);
  }
  return proved;
}

/** The 4 groups of 5 digits the patient reads to the care team. */
export function myShortCode(device) {
  return device?.uikSeed ? shortCode(device.userId, uikPublic(device.uikSeed)) : null;
}

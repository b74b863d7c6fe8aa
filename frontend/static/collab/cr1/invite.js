// Patient invitations bound by the link itself. Mirrors collab/crypto/invite.py.
// The inviting device makes a 32-byte secret s carried only in the link's URL
// fragment; s derives an Ed25519 invite key. The inviter's device signs a
// statement naming the case and the invite key; the patient's client, holding s,
// signs a proof binding the patient's user id and UIK to that invitation.
//
//   invite_seed = SHA-512("CR1/invite-key\0" || s)[0:32]
//   statement   = "CR1/invite\0" || case_id || inviter_user || inviter_device
//                 || invite_pub(32) || created_ms(u64)       signed by the inviter's DSK
//   proof       = "CR1/invite-proof\0" || case_id || invite_pub(32)
//                 || patient_user || patient_uik(32)          signed by invite_seed
//   short code  = first 20 digits of fingerprintDigits(patient_user, patient_uik)

import * as prim from './primitives.js';
import { signWith } from './signer.js';
import { concat, fixed, tag, u64, uuidBytes } from './encoding.js';
import { CryptoError } from './errors.js';
import { fingerprintDigits } from './safety.js';
import { Role } from './roster.js';

export const KEY_TAG = tag('CR1/invite-key');
export const STATEMENT_TAG = tag('CR1/invite');
export const PROOF_TAG = tag('CR1/invite-proof');
export const SECRET_LEN = 32;
export const SHORT_CODE_GROUPS = 4;

/** {seed, pub} of the invite key from the link secret. */
export function inviteKeypair(secret) {
  const seed = prim.sha512(concat(KEY_TAG, fixed(secret, SECRET_LEN, 'invite secret'))).slice(0, 32);
  return { seed, pub: prim.ed25519Public(seed) };
}

export function inviteStatementBytes(caseId, inviterUser, inviterDevice, invitePub, createdMs) {
  return concat(STATEMENT_TAG, uuidBytes(caseId), uuidBytes(inviterUser), uuidBytes(inviterDevice),
    fixed(invitePub, 32, 'invite_pub'), u64(createdMs));
}

export async function signInvitation(signer, caseId, inviterUser, inviterDevice, invitePub, createdMs) {
  prim.checkEd25519Public(invitePub);
  return signWith(signer, inviteStatementBytes(caseId, inviterUser, inviterDevice, invitePub, createdMs));
}

/** Throws CryptoError (bad_signature, non_canonical_signature, low_order_key, ...). */
export function verifyInvitationStatement(dskPub, caseId, inviterUser, inviterDevice, invitePub, createdMs, sig) {
  prim.checkEd25519Public(invitePub);
  prim.verify(dskPub, inviteStatementBytes(caseId, inviterUser, inviterDevice, invitePub, createdMs), sig);
}

export function inviteProofBytes(caseId, invitePub, patientUser, patientUik) {
  return concat(PROOF_TAG, uuidBytes(caseId), fixed(invitePub, 32, 'invite_pub'),
    uuidBytes(patientUser), fixed(patientUik, 32, 'patient_uik'));
}

export function signInviteProof(inviteSeed, caseId, invitePub, patientUser, patientUik) {
  return prim.sign(inviteSeed, inviteProofBytes(caseId, invitePub, patientUser, patientUik));
}

/** Any failure is bad_proof: the proof does not bind this patient to this link. */
export function verifyInviteProof(invitePub, caseId, patientUser, patientUik, sig) {
  try {
    prim.checkEd25519Public(invitePub);
    prim.verify(invitePub, inviteProofBytes(caseId, invitePub, patientUser, patientUik), sig);
  } catch (err) {
    throw new CryptoError('bad_proof', `invitation proof: ${err.code ?? err.message}`);
  }
}

/** 4 groups of 5 digits the patient reads out when the link proof is missing. */
export function shortCode(userId, uikPub) {
  const digits = fingerprintDigits(userId, uikPub);
  const groups = [];
  for (let i = 0; i < 5 * SHORT_CODE_GROUPS; i += 5) groups.push(digits.slice(i, i + 5));
  return groups;
}

/**
 * 'bound' | 'unbound' | 'bad_proof' for what the server lists about a patient's
 * invitation: inv = {createdBy, inviterDevice, invitePub, inviteSig, createdMs,
 * proofSig} (bytes as Uint8Array, missing values null). The inviter must be in the
 * case's verified HEAD roster (chain: LogEntry list) with a clinician role, and the
 * device under them; a patient or a removed member is bad_proof.
 */
export function checkInvitation(chain, caseId, inv, patientUser, patientUik) {
  if (!inv || !inv.invitePub || !inv.inviteSig) return 'unbound';
  if (!inv.inviterDevice || inv.createdMs === null || inv.createdMs === undefined) return 'bad_proof';
  let head = null;
  for (const entry of chain) {
    if (entry.caseId === caseId && (head === null || BigInt(entry.epoch) > BigInt(head.epoch))) head = entry;
  }
  if (!head) return 'bad_proof';
  const cert = head.roster.device(inv.inviterDevice);
  const member = head.roster.user(inv.createdBy);
  if (!cert || !member || cert.userId !== inv.createdBy || member.role === Role.PATIENT) return 'bad_proof';
  try {
    verifyInvitationStatement(cert.dskPub, caseId, inv.createdBy, inv.inviterDevice, inv.invitePub, inv.createdMs, inv.inviteSig);
  } catch {
    return 'bad_proof';
  }
  if (!inv.proofSig) return 'unbound';
  try {
    verifyInviteProof(inv.invitePub, caseId, patientUser, patientUik, inv.proofSig);
  } catch {
    return 'bad_proof';
  }
  return 'bound';
}

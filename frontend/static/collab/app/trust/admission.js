// Admission review: may a person's click in the admission dialog add this user
// to the case? Pure policy, no I/O, the same rules as collab/client/admission.py
// (both run tests/policy/trust_scenarios.json). Nothing here ever admits anyone:
// an add_user entry is built only after a person pressed Admit, and only if
// reviewAdmission allows it with what that person ticked.

import { DeviceCert, Role, b64d, verifyDeviceCert } from '../../cr1/index.js';

export const KINDS = Object.freeze(['claim', 'invite', 'patient', 'rejoin']);
export const BINDINGS = Object.freeze(['bound', 'unbound', 'bad_proof']);

/**
 * {pin: 'new'|'pinned'|'verified'|'changed', kind, binding: null|'bound'|'unbound'|'bad_proof',
 *  acceptChanged, codeCompared} -> {allowed, blockers}; blockers in this order:
 * 'identity_changed' (a changed key not explicitly accepted), then
 * 'patient_unbound' / 'patient_bad_proof' (a patient the link does not bind,
 * unless the short code was compared with the patient).
 */
export function reviewAdmission({ pin, kind, binding = null, acceptChanged = false, codeCompared = false }) {
  if (!['new', 'pinned', 'verified', 'changed'].includes(pin)) throw new TypeError(`unknown pin state ${pin}`);
  if (!KINDS.includes(kind)) throw new TypeError(`unknown join kind ${kind}`);
  if (binding !== null && !BINDINGS.includes(binding)) throw new TypeError(`unknown binding ${binding}`);
  const blockers = [];
  if (pin === 'changed' && acceptChanged !== true) blockers.push('identity_changed');
  // Only patients are bound by a link; a patient without a binding result is unbound.
  if (kind === 'patient' && binding !== 'bound' && codeCompared !== true) {
    blockers.push(binding === 'bad_proof' ? 'patient_bad_proof' : 'patient_unbound');
  }
  return { allowed: blockers.length === 0, blockers };
}

/** Why this user is waiting: the words the dialog shows. */
export function reasonText(kind) {
  return {
    claim: 'Claimed this consult from the specialty queue',
    invite: 'Invited by name',
    patient: 'Accepted a patient invitation link',
    rejoin: 'Asks to rejoin after an identity reset: a new identity key',
  }[kind] ?? 'Unknown request';
}

export const PIN_LABELS = Object.freeze({
  new: 'NEW: first time this identity key is seen',
  pinned: 'PINNED: the key seen for this person before',
  verified: 'VERIFIED: you compared safety numbers with this person',
  changed: 'CHANGED: a different key from the one seen for this person before',
});

export const BINDING_LABELS = Object.freeze({
  bound: 'Bound by the invitation link: this account holds the secret of the link you created',
  unbound: 'Unbound: nothing proves this account used your invitation link',
  bad_proof: 'Proof does not match: the link proof does not cover this account and key',
});

export const BLOCKER_TEXT = Object.freeze({
  identity_changed: 'This person\'s identity key changed: accept the new key explicitly first.',
  patient_unbound: 'Compare the code with the patient and tick the box first.',
  patient_bad_proof: 'The link proof does not match: compare the code with the patient and tick the box first.',
});

/**
 * The keys GET /api/users/<id>/keys returned for `userId`, checked: every device
 * certified by the listed identity key and belonging to that user. The server is
 * not trusted for the key itself: that is what the pin state and the dialog are for.
 * -> {uik, devices: [DeviceCert], role: Role.PATIENT|Role.MEMBER, name}
 */
export function checkedKeys(userId, keys) {
  const name = keys?.display_name || userId.slice(0, 8);
  if (!keys?.uik_pub) throw new Error(`${name} has not set up collab on any device yet, so they cannot be added.`);
  const uik = b64d(keys.uik_pub, 32);
  const devices = (keys.devices ?? []).map((d) => DeviceCert.fromWire(d));
  for (const cert of devices) {
    if (cert.userId !== userId) throw new Error('The server listed a device of another user.');
    verifyDeviceCert(cert, uik); // every device must chain to the user's identity key
  }
  if (!devices.length) throw new Error(`${name} has no active device yet.`);
  return { uik, devices, role: keys.role === 'patient' ? Role.PATIENT : Role.MEMBER, name };
}

/**
 * The kind the review uses. A patient request if ANY signal says so: the request's
 * kind, the listing's role, the role of GET /api/users/<id>/keys (`role`, which is
 * also the role about to be granted), so a server relabelling a patient's request
 * cannot switch the binding check off (the same rule as collab/client/admission.py).
 */
export function effectiveKind(request, role) {
  if (isPatientRequest(request, role)) return 'patient';
  return KINDS.includes(request.kind) ? request.kind : 'invite';
}

export function isPatientRequest(request, role) {
  return request?.kind === 'patient' || request?.role === 'patient' || role === Role.PATIENT;
}

/** The role an admission grants: a request any signal calls a patient's gets the
 * patient role, never a clinician's (the least the signals allow). */
export function grantedRole(request, role) {
  return isPatientRequest(request, role) ? Role.PATIENT : role;
}

/**
 * Adding a user from the directory (no join request): never a patient. A patient is
 * admitted only through the admission dialog, where the invitation binding (or a
 * compared code) is checked; a directory entry or key listing calling the account a
 * patient is refused here. `directoryRow` is the directory's row, `role` that of
 * checkedKeys.
 */
export function checkDirectAdd(directoryRow, role, name) {
  if (isPatientRequest(directoryRow ?? {}, role)) {
    throw new Error(`${name} is a patient account: patients join through their invitation and are admitted `
      + 'from "Waiting to join", where the link is checked. Nothing was added.');
  }
}

/** Pending join requests still to decide: not in the roster, one per user. */
export function openRequests(joinRequests, roster) {
  const seen = new Set();
  return (joinRequests ?? []).filter((r) => {
    if (!r || typeof r.user !== 'string' || seen.has(r.user)) return false;
    // A member asks again only to rejoin after an identity reset (the dialog compares keys).
    if (roster?.user(r.user) && r.kind !== 'rejoin') return false;
    seen.add(r.user);
    return true;
  });
}

// Membership-log actions: canonical bodies, the authorisation table and the
// pure roster transition applyAction that every verifier recomputes.
// Mirrors collab/crypto/actions.py (same checks, same order, same codes).
//
//   create        uik_pub(32) || u32 n || device*n          (author's own devices)
//   add_user      user_id || role u8 || uik_pub(32) || u32 n || device*n
//   remove_user   user_id || u8 has_leave || [device_id || epoch u64 || sig(64)]
//   add_device    device
//   remove_device user_id || device_id
//   rotate        (empty)
//   set_role      user_id || role u8
//   share_history hepk(32) || u32 n || (device_id || epoch u64 || var(box))*n
//   enrol_device  device || uik_sig(64)     (authored by that new device itself)

import * as prim from './primitives.js';
import { signWith } from './signer.js';
import { CryptoError } from './errors.js';
import { DeviceCert } from './devcert.js';
import {
  Reader, compareBytes, concat, equal, fixed, packList, tag, u64, u8, uuidBytes, varBytes,
} from './encoding.js';
import { Role, Roster, RosterUser, parseRole } from './roster.js';

export const LEAVE_TAG = tag('CR1/leave');
export const HISTORY_TAG = tag('CR1/history');
export const ENROL_TAG = tag('CR1/enrol');
// box(HISTORY_TAG || case_id || epoch u64 || device_id || K) = MAC + 84 bytes
export const HISTORY_CT_LEN = 16 + HISTORY_TAG.length + 16 + 8 + 16 + 32;
export const MAX_BODY = 1 << 20;
export const MAX_BODY_ITEMS = 8192;

export const Action = Object.freeze({
  CREATE: 1,
  ADD_USER: 2,
  REMOVE_USER: 3,
  ADD_DEVICE: 4,
  REMOVE_DEVICE: 5,
  ROTATE: 6,
  SET_ROLE: 7,
  SHARE_HISTORY: 8,
  ENROL_DEVICE: 9,
});
const ACTIONS = new Set(Object.values(Action));

export function parseAction(value) {
  if (!ACTIONS.has(value)) throw new CryptoError('bad_action', `unknown action ${value}`);
  return value;
}

const encodeDevices = (devices) => packList(devices, (d) => d.encode());

export class CreateBody {
  static action = Action.CREATE;
  constructor(uikPub, devices) {
    this.uikPub = uikPub;
    this.devices = Object.freeze([...devices]);
  }
  encode() {
    return concat(fixed(this.uikPub, 32, 'uik_pub'), encodeDevices(this.devices));
  }
}

export class AddUserBody {
  static action = Action.ADD_USER;
  constructor(userId, role, uikPub, devices) {
    this.userId = userId;
    this.role = role;
    this.uikPub = uikPub;
    this.devices = Object.freeze([...devices]);
  }
  encode() {
    return concat(uuidBytes(this.userId), u8(this.role), fixed(this.uikPub, 32, 'uik_pub'), encodeDevices(this.devices));
  }
}

/** Signed by one of the leaving user's devices; any remaining member may
 * commit it, so the leaver never authors the entry that removes them. */
export class LeaveRequest {
  constructor(deviceId, epoch, signature) {
    this.deviceId = deviceId;
    this.epoch = epoch; // log head epoch the leaver saw
    this.signature = signature;
  }
}

export function leaveBytes(caseId, userId, deviceId, epoch) {
  return concat(LEAVE_TAG, uuidBytes(caseId), uuidBytes(userId), uuidBytes(deviceId), u64(epoch));
}

export async function signLeave(signer, caseId, userId, deviceId, epoch) {
  return new LeaveRequest(deviceId, epoch, await signWith(signer, leaveBytes(caseId, userId, deviceId, epoch)));
}

export class RemoveUserBody {
  static action = Action.REMOVE_USER;
  constructor(userId, leave = null) {
    this.userId = userId;
    this.leave = leave;
  }
  encode() {
    const out = uuidBytes(this.userId);
    if (this.leave === null) return concat(out, u8(0));
    const lv = this.leave;
    return concat(out, u8(1), uuidBytes(lv.deviceId), u64(lv.epoch), fixed(lv.signature, 64, 'leave sig'));
  }
}

export class AddDeviceBody {
  static action = Action.ADD_DEVICE;
  constructor(device) {
    this.device = device;
  }
  encode() {
    return this.device.encode();
  }
}

/** What a user's identity key signs to let its own new device join one case at one
 * position of its log (so the signature cannot be replayed elsewhere). */
export function enrolBytes(caseId, epoch, prevHash, device) {
  return concat(ENROL_TAG, uuidBytes(caseId), u64(epoch), fixed(prevHash, 64, 'prev_hash'), device.encode());
}

/** A user's identity key admits that user's own newly certified device; the new
 * device authors the entry, so no other device of the user needs to be online. */
export class EnrolDeviceBody {
  static action = Action.ENROL_DEVICE;
  constructor(device, uikSig) {
    this.device = device;
    this.uikSig = uikSig;
  }
  encode() {
    return concat(this.device.encode(), fixed(this.uikSig, 64, 'uik_sig'));
  }
}

/** The body for entry `epoch` (the head's epoch + 1) over `prevHash` (the head). */
export function signEnrol(uikSeed, caseId, epoch, prevHash, device) {
  return new EnrolDeviceBody(device, prim.sign(uikSeed, enrolBytes(caseId, epoch, prevHash, device)));
}

export class RemoveDeviceBody {
  static action = Action.REMOVE_DEVICE;
  constructor(userId, deviceId) {
    this.userId = userId;
    this.deviceId = deviceId;
  }
  encode() {
    return concat(uuidBytes(this.userId), uuidBytes(this.deviceId));
  }
}

export class RotateBody {
  static action = Action.ROTATE;
  encode() {
    return new Uint8Array(0);
  }
}

export class SetRoleBody {
  static action = Action.SET_ROLE;
  constructor(userId, role) {
    this.userId = userId;
    this.role = role;
  }
  encode() {
    return concat(uuidBytes(this.userId), u8(this.role));
  }
}

export class HistoryWrap {
  constructor(deviceId, epoch, ciphertext) {
    this.deviceId = deviceId;
    this.epoch = epoch; // the earlier epoch whose key is re-wrapped
    this.ciphertext = ciphertext;
  }
  /** Sort key: device_id bytes || u64 epoch. */
  key() {
    return concat(uuidBytes(this.deviceId), u64(this.epoch));
  }
}

export class ShareHistoryBody {
  static action = Action.SHARE_HISTORY;
  constructor(hepk, items) {
    this.hepk = hepk; // fresh ephemeral X25519 public key for these wraps
    this.items = Object.freeze([...items]); // sorted by device_id bytes, then epoch
  }
  encode() {
    return concat(
      fixed(this.hepk, 32, 'hepk'),
      packList(this.items, (w) => concat(uuidBytes(w.deviceId), u64(w.epoch), varBytes(w.ciphertext))),
    );
  }
}

/** The action code of a body object. */
export function actionFor(body) {
  const action = body?.constructor?.action;
  if (!ACTIONS.has(action)) throw new CryptoError('bad_action', 'not an action body');
  return action;
}

function readBody(action, r) {
  switch (action) {
    case Action.CREATE:
      return new CreateBody(r.take(32), r.list((rr) => DeviceCert.read(rr), MAX_BODY_ITEMS));
    case Action.ADD_USER: {
      const uid = r.uuid();
      const role = parseRole(r.u8());
      const uik = r.take(32);
      return new AddUserBody(uid, role, uik, r.list((rr) => DeviceCert.read(rr), MAX_BODY_ITEMS));
    }
    case Action.REMOVE_USER: {
      const uid = r.uuid();
      const flag = r.u8();
      if (flag === 0) return new RemoveUserBody(uid);
      if (flag !== 1) throw new CryptoError('bad_action', 'has_leave must be 0 or 1');
      const deviceId = r.uuid();
      const epoch = r.u64();
      return new RemoveUserBody(uid, new LeaveRequest(deviceId, epoch, r.take(64)));
    }
    case Action.ADD_DEVICE:
      return new AddDeviceBody(DeviceCert.read(r));
    case Action.REMOVE_DEVICE: {
      const uid = r.uuid();
      return new RemoveDeviceBody(uid, r.uuid());
    }
    case Action.ROTATE:
      return new RotateBody();
    case Action.SET_ROLE: {
      const uid = r.uuid();
      return new SetRoleBody(uid, parseRole(r.u8()));
    }
    case Action.ENROL_DEVICE: {
      const device = DeviceCert.read(r);
      return new EnrolDeviceBody(device, r.take(64));
    }
    default: {
      const hepk = r.take(32);
      const items = r.list((rr) => {
        const deviceId = rr.uuid();
        const epoch = rr.u64();
        return new HistoryWrap(deviceId, epoch, rr.var(1024));
      }, MAX_BODY_ITEMS);
      return new ShareHistoryBody(hepk, items);
    }
  }
}

/** Exact parse; the body must re-encode to the same bytes. */
export function parseBody(action, data) {
  if (data.length > MAX_BODY) throw new CryptoError('too_large', 'action body too large');
  const r = new Reader(data);
  let body;
  try {
    body = readBody(action, r);
    r.done();
  } catch (err) {
    if (err instanceof CryptoError) throw new CryptoError('bad_action', `malformed body: ${err.code}`);
    throw err;
  }
  if (!equal(body.encode(), data)) throw new CryptoError('bad_action', 'non-canonical action body');
  return body;
}

// --- authorisation -----------------------------------------------------------

const isManager = (role) => role === Role.OWNER || role === Role.ADMIN;
const deny = (why) => new CryptoError('unauthorized_author', why);

/** The authorisation table (docs/protocol-crypto.md 6.3) against the PREVIOUS roster. */
export function authorize(prev, { caseId, prevEpoch, authorUserId, action, body, prevHash = null }) {
  if (prev === null) {
    if (action !== Action.CREATE) throw new CryptoError('bad_action', 'the genesis entry must be create');
    return;
  }
  const author = prev.user(authorUserId);
  if (!author) throw deny('author is not in the previous roster');
  const role = author.role;
  if (body instanceof CreateBody) throw new CryptoError('bad_action', 'create is only valid at genesis');
  if (body instanceof AddUserBody) {
    if (!isManager(role)) throw deny('only an owner or admin adds users');
    if (body.role === Role.OWNER && role !== Role.OWNER) throw deny('only an owner adds an owner');
  } else if (body instanceof RemoveUserBody) {
    const target = prev.user(body.userId);
    if (body.leave !== null) {
      checkLeave(prev, caseId, prevEpoch, body.userId, body.leave);
    } else if (!isManager(role)) {
      throw deny('only an owner or admin removes users (others may commit a signed leave)');
    } else if (target && target.role === Role.OWNER && role !== Role.OWNER) {
      throw deny('only an owner removes an owner');
    }
  } else if (body instanceof AddDeviceBody) {
    if (body.device.userId !== authorUserId) throw deny('a user adds only their own devices');
  } else if (body instanceof RemoveDeviceBody) {
    if (body.userId !== authorUserId) {
      const target = prev.user(body.userId);
      if (!isManager(role)) throw deny('a user removes only their own devices');
      if (target && target.role === Role.OWNER && role !== Role.OWNER) {
        throw deny("only an owner revokes an owner's device");
      }
    }
  } else if (body instanceof SetRoleBody) {
    const target = prev.user(body.userId);
    if (!isManager(role)) throw deny('only an owner or admin sets roles');
    const touchesOwner = body.role === Role.OWNER || (target && target.role === Role.OWNER);
    if (touchesOwner && role !== Role.OWNER) throw deny('only an owner grants or revokes owner');
  } else if (body instanceof ShareHistoryBody && !isManager(role)) {
    throw deny('only an owner or admin shares history');
  } else if (body instanceof EnrolDeviceBody) {
    if (body.device.userId !== authorUserId) throw deny("an identity key enrols only its own user's devices");
    const msg = enrolBytes(caseId, BigInt(prevEpoch) + 1n, prevHash, body.device);
    prim.verify(author.uikPub, msg, body.uikSig);
  }
  // RotateBody: any member of the previous roster.
}

function checkLeave(prev, caseId, prevEpoch, userId, lv) {
  const user = prev.user(userId);
  const device = prev.device(lv.deviceId);
  if (!user || !device || device.userId !== userId) {
    throw deny('leave request is not from a device of the leaving user');
  }
  // since_epoch bounds replay of an old request after the user was re-added.
  // (Relational operators compare Number and BigInt exactly.)
  if (!(user.sinceEpoch <= lv.epoch && lv.epoch <= prevEpoch)) {
    throw deny("leave request epoch outside the user's membership");
  }
  prim.verify(device.dskPub, leaveBytes(caseId, userId, lv.deviceId, lv.epoch), lv.signature);
}

// --- roster transition ---------------------------------------------------------

/** The roster that must result from `body`; throws bad_action if impossible. */
export function applyAction(prev, { epoch, authorUserId, body }) {
  if (body instanceof CreateBody) {
    if (prev !== null) throw new CryptoError('bad_action', 'create is only valid at genesis');
    if (body.devices.some((d) => d.userId !== authorUserId)) {
      throw new CryptoError('bad_action', "create lists another user's device");
    }
    return Roster.build([new RosterUser(authorUserId, Role.OWNER, body.uikPub, epoch)], body.devices);
  }
  if (prev === null) throw new CryptoError('bad_action', 'the genesis entry must be create');
  let users = [...prev.users];
  let devices = [...prev.devices];
  if (body instanceof AddUserBody) {
    if (prev.user(body.userId)) throw new CryptoError('bad_action', 'user is already in the roster');
    if (body.devices.some((d) => d.userId !== body.userId)) {
      throw new CryptoError('bad_action', "add_user lists another user's device");
    }
    if (body.devices.some((d) => prev.device(d.deviceId))) {
      throw new CryptoError('bad_action', 'device is already in the roster');
    }
    users.push(new RosterUser(body.userId, body.role, body.uikPub, epoch));
    devices.push(...body.devices);
  } else if (body instanceof RemoveUserBody) {
    if (!prev.user(body.userId)) throw new CryptoError('bad_action', 'user is not in the roster');
    users = users.filter((u) => u.userId !== body.userId);
    devices = devices.filter((d) => d.userId !== body.userId);
  } else if (body instanceof AddDeviceBody || body instanceof EnrolDeviceBody) {
    if (!prev.user(body.device.userId)) throw new CryptoError('bad_action', 'device of a user not in the roster');
    if (prev.device(body.device.deviceId)) throw new CryptoError('bad_action', 'device is already in the roster');
    devices.push(body.device);
  } else if (body instanceof RemoveDeviceBody) {
    const d = prev.device(body.deviceId);
    if (!d || d.userId !== body.userId) throw new CryptoError('bad_action', 'no such device for that user');
    devices = devices.filter((x) => x.deviceId !== body.deviceId);
  } else if (body instanceof SetRoleBody) {
    const u = prev.user(body.userId);
    if (!u) throw new CryptoError('bad_action', 'user is not in the roster');
    if (u.role === body.role) throw new CryptoError('bad_action', 'role is unchanged');
    users = users.map((x) => (x === u ? new RosterUser(x.userId, body.role, x.uikPub, x.sinceEpoch) : x));
  } else if (body instanceof ShareHistoryBody) {
    const keys = body.items.map((w) => w.key());
    const strictlySorted = keys.every((k, i) => i === 0 || compareBytes(keys[i - 1], k) < 0);
    if (keys.length === 0 || !strictlySorted) {
      throw new CryptoError('bad_action', 'history wraps empty or not strictly sorted');
    }
    prim.checkX25519Public(body.hepk);
    for (const w of body.items) {
      if (!prev.device(w.deviceId) || w.epoch >= epoch) {
        throw new CryptoError('bad_action', 'history wrap for an unknown device or a future epoch');
      }
      if (w.ciphertext.length !== HISTORY_CT_LEN) {
        throw new CryptoError('bad_action', 'history wrap has the wrong length');
      }
    }
  } else if (!(body instanceof RotateBody)) {
    throw new CryptoError('bad_action', 'not an action body');
  }
  return Roster.build(users, devices);
}

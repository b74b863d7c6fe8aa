// The roster: who is in a case (users with role and UIK) and which devices
// receive its keys. Carried in full in every membership-log entry.
// Mirrors collab/crypto/roster.py.
//
//   roster = u32 n || user*n || u32 m || device*m
//   user   = user_id(16) || role u8 || uik_pub(32) || since_epoch u64
//   device = DeviceCert record, sorted by user_id || device_id

import * as prim from './primitives.js';
import { CryptoError } from './errors.js';
import { DeviceCert, verifyDeviceCert } from './devcert.js';
import { compareBytes, concat, equal, fixed, packList, u8, u64, uuidBytes } from './encoding.js';
import { b64e, getB64, getInt, getList, getUuid, wireInt } from './wire.js';

export const MAX_USERS = 1024;
export const MAX_DEVICES = 8192;

export const Role = Object.freeze({ OWNER: 1, ADMIN: 2, MEMBER: 3, PATIENT: 4 });
const ROLES = new Set(Object.values(Role));

export function parseRole(value) {
  if (!ROLES.has(value)) throw new CryptoError('bad_field', `unknown role ${value}`);
  return value;
}

export class RosterUser {
  // sinceEpoch: epoch of the entry that (last) added the user; bounds leave
  // requests and tells clients from which epoch the user may hold keys.
  constructor(userId, role, uikPub, sinceEpoch) {
    this.userId = userId;
    this.role = role;
    this.uikPub = uikPub;
    this.sinceEpoch = sinceEpoch;
    Object.freeze(this);
  }

  encode() {
    return concat(uuidBytes(this.userId), u8(this.role), fixed(this.uikPub, 32, 'uik_pub'), u64(this.sinceEpoch));
  }

  static read(r) {
    return new RosterUser(r.uuid(), parseRole(r.u8()), r.take(32), r.u64());
  }

  toWire() {
    return {
      user_id: this.userId,
      role: this.role,
      uik_pub: b64e(this.uikPub),
      since_epoch: wireInt(this.sinceEpoch),
    };
  }

  static fromWire(d) {
    return new RosterUser(
      getUuid(d, 'user_id'),
      parseRole(getInt(d, 'role', 255)),
      getB64(d, 'uik_pub', 32),
      getInt(d, 'since_epoch'),
    );
  }
}

/** Sort key of a device: user_id || device_id bytes. */
export function deviceKey(d) {
  return concat(uuidBytes(d.userId), uuidBytes(d.deviceId));
}

export class Roster {
  constructor(users, devices) {
    this.users = Object.freeze([...users]);
    this.devices = Object.freeze([...devices]);
    Object.freeze(this);
  }

  /** Canonical order: users by user_id bytes, devices by user_id||device_id. */
  static build(users, devices) {
    return new Roster(
      [...users].sort((a, b) => compareBytes(uuidBytes(a.userId), uuidBytes(b.userId))),
      [...devices].sort((a, b) => compareBytes(deviceKey(a), deviceKey(b))),
    );
  }

  encode() {
    return concat(packList(this.users, (u) => u.encode()), packList(this.devices, (d) => d.encode()));
  }

  static read(r) {
    const users = r.list((rr) => RosterUser.read(rr), MAX_USERS);
    const devices = r.list((rr) => DeviceCert.read(rr), MAX_DEVICES);
    return new Roster(users, devices);
  }

  /** Rosters are equal when their canonical bytes are (all fields are fixed width). */
  equals(other) {
    return equal(this.encode(), other.encode());
  }

  user(userId) {
    return this.users.find((u) => u.userId === userId) ?? null;
  }

  device(deviceId) {
    return this.devices.find((d) => d.deviceId === deviceId) ?? null;
  }

  devicesOf(userId) {
    return this.devices.filter((d) => d.userId === userId);
  }

  /** Structure, key and certificate checks every roster must pass (same order as Python). */
  validate() {
    for (let i = 1; i < this.users.length; i++) {
      if (compareBytes(uuidBytes(this.users[i - 1].userId), uuidBytes(this.users[i].userId)) >= 0) {
        throw new CryptoError('bad_roster', 'users not strictly sorted by user_id');
      }
    }
    for (let i = 1; i < this.devices.length; i++) {
      if (compareBytes(deviceKey(this.devices[i - 1]), deviceKey(this.devices[i])) >= 0) {
        throw new CryptoError('bad_roster', 'devices not strictly sorted by user_id||device_id');
      }
    }
    if (new Set(this.devices.map((d) => d.deviceId)).size !== this.devices.length) {
      throw new CryptoError('bad_roster', 'duplicate device_id');
    }
    if (!this.users.some((u) => u.role === Role.OWNER)) {
      throw new CryptoError('bad_roster', 'roster has no owner');
    }
    const byId = new Map(this.users.map((u) => [u.userId, u]));
    for (const u of this.users) {
      prim.checkEd25519Public(u.uikPub);
      if (this.devicesOf(u.userId).length === 0) {
        throw new CryptoError('bad_roster', `user ${u.userId} has no device`);
      }
    }
    for (const d of this.devices) {
      const owner = byId.get(d.userId);
      if (!owner) throw new CryptoError('bad_roster', `device ${d.deviceId} of a user not in the roster`);
      verifyDeviceCert(d, owner.uikPub);
    }
  }

  toWire() {
    return {
      users: this.users.map((u) => u.toWire()),
      devices: this.devices.map((d) => d.toWire()),
    };
  }

  static fromWire(d) {
    const users = getList(d, 'users').map((x) => RosterUser.fromWire(x));
    const devices = getList(d, 'devices').map((x) => DeviceCert.fromWire(x));
    return new Roster(users, devices);
  }
}


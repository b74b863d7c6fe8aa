// Device certificates: a user's identity key (UIK) vouches for one device's
// signing key (DSK) and key-wrap key (DXK). Mirrors collab/crypto/devcert.py.
//
//   cert_bytes = "CR1/devcert\0" || user_id(16) || device_id(16)
//                || dsk_pub(32) || dxk_pub(32) || not_before_ms u64
//   cert_sig   = Ed25519(UIK, cert_bytes)
//   record     = cert_bytes[12:] || cert_sig(64)          (roster record)

import * as prim from './primitives.js';
import { CryptoError } from './errors.js';
import { concat, fixed, tag, u64, uuidBytes } from './encoding.js';
import { b64e, getB64, getInt, getUuid, wireInt } from './wire.js';

export const TAG = tag('CR1/devcert');
export const RECORD_LEN = 16 + 16 + 32 + 32 + 8 + 64;

export function certBytes(userId, deviceId, dskPub, dxkPub, notBeforeMs) {
  return concat(
    TAG,
    uuidBytes(userId),
    uuidBytes(deviceId),
    fixed(dskPub, 32, 'dsk_pub'),
    fixed(dxkPub, 32, 'dxk_pub'),
    u64(notBeforeMs),
  );
}

export class DeviceCert {
  constructor(userId, deviceId, dskPub, dxkPub, notBeforeMs, certSig) {
    this.userId = userId;
    this.deviceId = deviceId;
    this.dskPub = dskPub;
    this.dxkPub = dxkPub;
    this.notBeforeMs = notBeforeMs;
    this.certSig = certSig;
    Object.freeze(this);
  }

  signedBytes() {
    return certBytes(this.userId, this.deviceId, this.dskPub, this.dxkPub, this.notBeforeMs);
  }

  /** Roster record: the certified fields followed by the signature. */
  encode() {
    return concat(this.signedBytes().subarray(TAG.length), fixed(this.certSig, 64, 'cert_sig'));
  }

  static read(r) {
    return new DeviceCert(r.uuid(), r.uuid(), r.take(32), r.take(32), r.u64(), r.take(64));
  }

  toWire() {
    return {
      user_id: this.userId,
      device_id: this.deviceId,
      dsk_pub: b64e(this.dskPub),
      dxk_pub: b64e(this.dxkPub),
      not_before_ms: wireInt(this.notBeforeMs),
      cert_sig: b64e(this.certSig),
    };
  }

  static fromWire(d) {
    return new DeviceCert(
      getUuid(d, 'user_id'),
      getUuid(d, 'device_id'),
      getB64(d, 'dsk_pub', 32),
      getB64(d, 'dxk_pub', 32),
      getInt(d, 'not_before_ms'),
      getB64(d, 'cert_sig', 64),
    );
  }
}

export function makeDeviceCert(uikSeed, userId, deviceId, dskPub, dxkPub, notBeforeMs) {
  prim.checkEd25519Public(dskPub);
  prim.checkX25519Public(dxkPub);
  const msg = certBytes(userId, deviceId, dskPub, dxkPub, notBeforeMs);
  return new DeviceCert(userId, deviceId, new Uint8Array(dskPub), new Uint8Array(dxkPub),
    notBeforeMs, prim.sign(uikSeed, msg));
}

/** Key checks keep their own codes; any signature failure is bad_certificate.
 * `nowMs` (server clock on registration) rejects a not-yet-valid cert. */
export function verifyDeviceCert(cert, uikPub, nowMs = null) {
  prim.checkEd25519Public(cert.dskPub);
  prim.checkX25519Public(cert.dxkPub);
  try {
    prim.verify(uikPub, cert.signedBytes(), cert.certSig);
  } catch (err) {
    if (err instanceof CryptoError && (err.code === 'bad_signature' || err.code === 'non_canonical_signature')) {
      throw new CryptoError('bad_certificate', `device ${cert.deviceId}: ${err.code}`);
    }
    throw err;
  }
  if (nowMs !== null && nowMs !== undefined && nowMs < cert.notBeforeMs) {
    throw new CryptoError('bad_certificate', 'certificate is not yet valid');
  }
}

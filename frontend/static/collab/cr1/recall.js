// Recall of a message: the sender's signed statement that a message is withdrawn.
// Mirrors collab/crypto/recall.py (same bytes, same checks, same codes).
//
//   recall = "CR1/recall\0" || case_id(16) || seq u64 || sender_device_id(16)
//            || client_msg_id(16) || H(header)(64) || recall_device_id(16)
//            || recalled_ms u64
//   sig    = Ed25519(DSK of recall_device_id, recall)
//
// Signed by the sending device or another device of the same user; a server holds no
// DSK, so a removed message without a valid recall was removed by the server.

import * as prim from './primitives.js';
import { signWith } from './signer.js';
import { CryptoError } from './errors.js';
import { Reader, concat, equal, fixed, sameInt, tag, u64, uuidBytes } from './encoding.js';
import { Header } from './envelope.js';
import { b64e, getB64, getInt, getUuid, wireInt } from './wire.js';

export const RECALL_TAG = tag('CR1/recall');

const FIELDS = ['caseId', 'seq', 'senderDeviceId', 'clientMsgId', 'headerHash', 'deviceId', 'recalledMs'];

export class Recall {
  /** {caseId, seq, senderDeviceId, clientMsgId, headerHash, deviceId (the recalling device), recalledMs} */
  constructor(fields) {
    for (const f of FIELDS) this[f] = fields[f];
    Object.freeze(this);
  }

  encode() {
    return concat(
      RECALL_TAG,
      uuidBytes(this.caseId),
      u64(this.seq),
      uuidBytes(this.senderDeviceId),
      fixed(this.clientMsgId, 16, 'client_msg_id'),
      fixed(this.headerHash, 64, 'header_hash'),
      uuidBytes(this.deviceId),
      u64(this.recalledMs),
    );
  }

  static decode(data) {
    const r = new Reader(data);
    r.tag(RECALL_TAG);
    const f = {};
    f.caseId = r.uuid();
    f.seq = r.u64();
    f.senderDeviceId = r.uuid();
    f.clientMsgId = r.take(16);
    f.headerHash = r.take(64);
    f.deviceId = r.uuid();
    f.recalledMs = r.u64();
    r.done();
    return new Recall(f);
  }

  toWire() {
    return {
      case_id: this.caseId,
      seq: wireInt(this.seq),
      sender_device_id: this.senderDeviceId,
      client_msg_id: b64e(this.clientMsgId),
      header_hash: b64e(this.headerHash),
      device_id: this.deviceId,
      recalled_ms: wireInt(this.recalledMs),
    };
  }

  static fromWire(d) {
    return new Recall({
      caseId: getUuid(d, 'case_id'),
      seq: getInt(d, 'seq'),
      senderDeviceId: getUuid(d, 'sender_device_id'),
      clientMsgId: getB64(d, 'client_msg_id', 16),
      headerHash: getB64(d, 'header_hash', 64),
      deviceId: getUuid(d, 'device_id'),
      recalledMs: getInt(d, 'recalled_ms'),
    });
  }
}

/** H of the header's canonical bytes (what the sender signed). */
export function headerHash(header) {
  return prim.sha512(header instanceof Header ? header.encode() : header);
}

/** The statement recalling the message with this header, stored at `seq`. */
export function recallFor(header, { seq, deviceId, recalledMs }) {
  return new Recall({
    caseId: header.caseId,
    seq,
    senderDeviceId: header.senderDeviceId,
    clientMsgId: header.clientMsgId,
    headerHash: headerHash(header),
    deviceId,
    recalledMs,
  });
}

/** Sign with a DSK signer (signer.js) or a 32-byte seed; resolves to 64 bytes. */
export async function signRecall(signer, recall) {
  return signWith(signer, recall.encode());
}

/** Throws CryptoError (bad_signature, non_canonical_signature, low_order_key, ...). */
export function verifyRecall(dskPub, recall, sig) {
  prim.verify(dskPub, recall.encode(), sig);
}

/** The statement names exactly this message, else recall_mismatch. */
export function checkRecallNames(recall, header, seq) {
  if (
    recall.caseId !== header.caseId
    || !sameInt(recall.seq, seq)
    || recall.senderDeviceId !== header.senderDeviceId
    || !equal(recall.clientMsgId, header.clientMsgId)
    || !equal(recall.headerHash, headerHash(header))
  ) {
    throw new CryptoError('recall_mismatch', 'the recall names another message');
  }
}

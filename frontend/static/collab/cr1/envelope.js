// Message envelopes: a signed header the server can check without keys and
// a secretbox ciphertext only epoch-key holders can open.
// Mirrors collab/crypto/envelope.py (same checks, same order, same codes).
//
//   header = "CR1/msg\0" || version u8 || case_id || epoch u64 || log_head(64)
//            || sender_user_id || sender_device_id || client_msg_id(16)
//            || sender_seq u64 || sent_ms u64 || var(content_type ascii)
//            || nonce(24) || ct_len u32 || H(ct)(64)
//            || u32 n || (blob_id || root(64))*n
//   sig    = Ed25519(DSK, header)
//   inner  = "CR1/inner\0" || case_id || epoch u64 || sender_device_id
//            || client_msg_id(16) || sender_seq u64 || var(body UTF-8 JSON)
//   ct     = secretbox(inner, nonce, K_e)      (MAC || ciphertext)

import * as prim from './primitives.js';
import { signWith } from './signer.js';
import { CryptoError } from './errors.js';
import {
  Reader, big, concat, equal, fixed, norm, packList, sameInt, tag, toHex, u32, u64, u8,
  uuidBytes, varBytes,
} from './encoding.js';
import { decodeBody, encodeBody } from './body.js';
import { b64e, getB64, getInt, getList, getStr, getUuid, wireInt } from './wire.js';

export const TAG = tag('CR1/msg');
export const INNER_TAG = tag('CR1/inner');
export const VERSION = 1;
export const MAX_CONTENT_TYPE = 64;
export const MAX_ATTACHMENTS = 64;
export const DEFAULT_MAX_CT_LEN = 256 * 1024;

export { encodeBody, decodeBody };

export class AttachmentRef {
  constructor(blobId, root) {
    this.blobId = blobId;
    this.root = root; // attachment root of the blob's ciphertext chunks
  }
}

/** content_type: 1..64 bytes of printable ASCII 0x21..0x7e, else bad_field. */
function contentTypeBytes(value) {
  if (typeof value !== 'string') throw new CryptoError('bad_field', 'content_type must be printable ASCII');
  const raw = new Uint8Array(value.length);
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) throw new CryptoError('bad_field', 'content_type must be printable ASCII');
    raw[i] = c;
  }
  if (raw.length === 0 || raw.length > MAX_CONTENT_TYPE) {
    throw new CryptoError('bad_field', 'content_type must be 1..64 printable ASCII bytes');
  }
  return raw;
}

function contentTypeStr(raw) {
  const value = String.fromCharCode(...raw);
  contentTypeBytes(value);
  return value;
}

const HEADER_FIELDS = [
  'caseId', 'epoch', 'logHead', 'senderUserId', 'senderDeviceId', 'clientMsgId', 'senderSeq',
  'sentMs', 'contentType', 'nonce', 'ctLen', 'ctHash',
];

export class Header {
  /** Fields of HEADER_FIELDS plus `attachments` (default []) and `version` (default 1). */
  constructor(fields) {
    for (const f of HEADER_FIELDS) this[f] = fields[f];
    this.attachments = Object.freeze([...(fields.attachments ?? [])]);
    this.version = fields.version ?? VERSION;
    Object.freeze(this);
  }

  replace(changes) {
    return new Header({ ...this, ...changes });
  }

  encode() {
    return concat(
      TAG,
      u8(this.version),
      uuidBytes(this.caseId),
      u64(this.epoch),
      fixed(this.logHead, 64, 'log_head'),
      uuidBytes(this.senderUserId),
      uuidBytes(this.senderDeviceId),
      fixed(this.clientMsgId, 16, 'client_msg_id'),
      u64(this.senderSeq),
      u64(this.sentMs),
      varBytes(contentTypeBytes(this.contentType)),
      fixed(this.nonce, 24, 'nonce'),
      u32(this.ctLen),
      fixed(this.ctHash, 64, 'ct_hash'),
      packList(this.attachments, (a) => concat(uuidBytes(a.blobId), fixed(a.root, 64))),
    );
  }

  static decode(data) {
    const r = new Reader(data);
    r.tag(TAG);
    const version = r.u8();
    if (version !== VERSION) throw new CryptoError('unsupported_version', `envelope version ${version}`);
    const f = { version };
    f.caseId = r.uuid();
    f.epoch = r.u64();
    f.logHead = r.take(64);
    f.senderUserId = r.uuid();
    f.senderDeviceId = r.uuid();
    f.clientMsgId = r.take(16);
    f.senderSeq = r.u64();
    f.sentMs = r.u64();
    f.contentType = contentTypeStr(r.var(MAX_CONTENT_TYPE));
    f.nonce = r.take(24);
    f.ctLen = r.u32();
    f.ctHash = r.take(64);
    f.attachments = r.list((rr) => {
      const blobId = rr.uuid();
      return new AttachmentRef(blobId, rr.take(64));
    }, MAX_ATTACHMENTS);
    r.done();
    return new Header(f);
  }
}

export class Envelope {
  constructor(header, ct, sig) {
    this.header = header;
    this.ct = ct;
    this.sig = sig;
    Object.freeze(this);
  }

  /** Same JSON field names as Python's Envelope.to_wire. */
  toWire() {
    const h = this.header;
    return {
      v: h.version,
      case_id: h.caseId,
      epoch: wireInt(h.epoch),
      log_head: b64e(h.logHead),
      sender_user_id: h.senderUserId,
      sender_device_id: h.senderDeviceId,
      client_msg_id: b64e(h.clientMsgId),
      sender_seq: wireInt(h.senderSeq),
      sent_ms: wireInt(h.sentMs),
      content_type: h.contentType,
      nonce: b64e(h.nonce),
      ct_len: h.ctLen,
      ct_hash: b64e(h.ctHash),
      attachments: h.attachments.map((a) => ({ blob_id: a.blobId, root: b64e(a.root) })),
      ct: b64e(this.ct),
      sig: b64e(this.sig),
    };
  }

  static fromWire(d) {
    const version = getInt(d, 'v', 255);
    if (version !== VERSION) throw new CryptoError('unsupported_version', `envelope version ${version}`);
    const atts = getList(d, 'attachments');
    if (atts.length > MAX_ATTACHMENTS) throw new CryptoError('bad_length', 'too many attachments');
    const f = { version };
    f.caseId = getUuid(d, 'case_id');
    f.epoch = getInt(d, 'epoch');
    f.logHead = getB64(d, 'log_head', 64);
    f.senderUserId = getUuid(d, 'sender_user_id');
    f.senderDeviceId = getUuid(d, 'sender_device_id');
    f.clientMsgId = getB64(d, 'client_msg_id', 16);
    f.senderSeq = getInt(d, 'sender_seq');
    f.sentMs = getInt(d, 'sent_ms');
    f.contentType = getStr(d, 'content_type');
    contentTypeBytes(f.contentType);
    f.nonce = getB64(d, 'nonce', 24);
    f.ctLen = getInt(d, 'ct_len', 0xffffffff);
    f.ctHash = getB64(d, 'ct_hash', 64);
    f.attachments = atts.map((a) => {
      const blobId = getUuid(a, 'blob_id');
      return new AttachmentRef(blobId, getB64(a, 'root', 64));
    });
    const header = new Header(f);
    const ct = getB64(d, 'ct');
    return new Envelope(header, ct, getB64(d, 'sig', 64));
  }
}

export function innerBytes(h, body) {
  return concat(
    INNER_TAG,
    uuidBytes(h.caseId),
    u64(h.epoch),
    uuidBytes(h.senderDeviceId),
    fixed(h.clientMsgId, 16, 'client_msg_id'),
    u64(h.senderSeq),
    varBytes(body),
  );
}

/** Encrypt and sign one message. `body` is a JSON object (or its UTF-8 bytes);
 * `signer` is the sender's DSK signer (signer.js; a seed is taken as a tweetnacl one). */
export async function sealMessage({
  signer, epochKey, caseId, epoch, logHead, senderUserId, senderDeviceId, senderSeq, sentMs,
  contentType, body, attachments = [], clientMsgId = null, nonce = null,
}) {
  const bodyBytes = body instanceof Uint8Array ? body : encodeBody(body);
  const draft = new Header({
    caseId, epoch, logHead, senderUserId, senderDeviceId,
    clientMsgId: clientMsgId ?? prim.randomBytes(16),
    senderSeq, sentMs, contentType,
    nonce: nonce ?? prim.randomBytes(24),
    ctLen: 0,
    ctHash: new Uint8Array(64),
    attachments,
  });
  const ct = prim.secretboxSeal(epochKey, draft.nonce, innerBytes(draft, bodyBytes));
  const header = draft.replace({ ctLen: ct.length, ctHash: prim.sha512(ct) });
  return new Envelope(header, ct, await signWith(signer, header.encode()));
}

/** Checks possible without keys (server and receivers): version,
 * signature, ct_len, H(ct), size limit — in that order. */
export function verifyEnvelope(env, dskPub, { maxCtLen = DEFAULT_MAX_CT_LEN } = {}) {
  if (env.header.version !== VERSION) {
    throw new CryptoError('unsupported_version', `envelope version ${env.header.version}`);
  }
  prim.verify(dskPub, env.header.encode(), env.sig);
  if (env.header.ctLen !== env.ct.length) throw new CryptoError('bad_length', 'ct_len does not match the ciphertext');
  if (!equal(prim.sha512(env.ct), env.header.ctHash)) throw new CryptoError('bad_hash', 'H(ct) does not match the header');
  if (env.ct.length > maxCtLen) throw new CryptoError('too_large', 'ciphertext exceeds the size limit');
}

/** The sender must be a roster device of the (verified) log entry the
 * header names; returns that device's DSK for verifyEnvelope. */
export function checkSender(env, entry) {
  const h = env.header;
  if (h.caseId !== entry.caseId) throw new CryptoError('wrong_case', 'message belongs to another case');
  if (!sameInt(h.epoch, entry.epoch)) throw new CryptoError('wrong_epoch', "message epoch is not this entry's epoch");
  if (!equal(h.logHead, entry.entryHash())) throw new CryptoError('stale_head', "log_head is not this entry's hash");
  const device = entry.roster.device(h.senderDeviceId);
  if (!device || device.userId !== h.senderUserId) {
    throw new CryptoError('unauthorized_author', 'sender device is not in the roster');
  }
  return device.dskPub;
}

/** Verify, decrypt, and check `inner` against the header (fail closed).
 * Returns the body object. */
export function openEnvelope(env, epochKey, { senderDskPub, maxCtLen = DEFAULT_MAX_CT_LEN }) {
  verifyEnvelope(env, senderDskPub, { maxCtLen });
  const h = env.header;
  const inner = prim.secretboxOpen(epochKey, h.nonce, env.ct);
  const full = innerBytes(h, new Uint8Array(0));
  const prefix = full.subarray(0, full.length - 4);
  if (inner.length < prefix.length || !equal(inner.subarray(0, prefix.length), prefix)) {
    throw new CryptoError('inner_mismatch', 'inner fields differ from the signed header');
  }
  let raw;
  try {
    const r = new Reader(inner.subarray(prefix.length));
    raw = r.var();
    r.done();
  } catch (err) {
    if (err instanceof CryptoError) throw new CryptoError('inner_mismatch', 'inner body is malformed');
    throw err;
  }
  const body = decodeBody(raw);
  checkManifests(body, h);
  return body;
}

/** Manifests inside the body must name exactly the signed attachment list. */
function checkManifests(body, h) {
  const manifests = Object.prototype.hasOwnProperty.call(body, 'attachments') ? body.attachments : [];
  if (!Array.isArray(manifests)) throw new CryptoError('bad_body', 'attachments must be a list');
  let refs;
  try {
    refs = manifests.map((m) => [getUuid(m, 'blob_id'), getB64(m, 'root', 64)]);
  } catch (err) {
    if (err instanceof CryptoError) throw new CryptoError('bad_body', `bad attachment manifest: ${err.code}`);
    throw err;
  }
  const same = refs.length === h.attachments.length
    && refs.every(([id, root], i) => id === h.attachments[i].blobId && equal(root, h.attachments[i].root));
  if (!same) throw new CryptoError('inner_mismatch', 'attachment manifests differ from the header');
}

/** Messages from `deviceId` with these sender_seq values never arrived. */
export class Gap {
  constructor(deviceId, firstMissing, lastMissing) {
    this.deviceId = deviceId;
    this.firstMissing = firstMissing;
    this.lastMissing = lastMissing;
    Object.freeze(this);
  }
}

/** Receiver-side replay filter, one per case: drops a seen client_msg_id
 * or a non-increasing sender_seq, reports gaps as missing messages. */
export class ReplayGuard {
  constructor() {
    this._seen = new Map(); // device_id -> Set of client_msg_id hex
    this._lastSeq = new Map(); // device_id -> BigInt
  }

  /** Returns a Gap or null; throws replay. Does not remember the message. */
  check(header) {
    const dev = header.senderDeviceId;
    if (this._seen.get(dev)?.has(toHex(header.clientMsgId))) {
      throw new CryptoError('replay', 'client_msg_id already seen');
    }
    const last = this._lastSeq.get(dev);
    const seq = big(header.senderSeq);
    if (last !== undefined && seq <= last) throw new CryptoError('replay', 'sender_seq did not increase');
    if (last !== undefined && seq > last + 1n) return new Gap(dev, norm(last + 1n), norm(seq - 1n));
    return null;
  }

  /** check(), then remember the message. */
  accept(header) {
    const gap = this.check(header);
    const dev = header.senderDeviceId;
    if (!this._seen.has(dev)) this._seen.set(dev, new Set());
    this._seen.get(dev).add(toHex(header.clientMsgId));
    this._lastSeq.set(dev, big(header.senderSeq));
    return gap;
  }
}


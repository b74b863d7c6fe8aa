// Proof that a request comes from a device that holds its signing key (DSK),
// after RFC 9449 (DPoP). Mirrors collab/crypto/devproof.py.
//
//   http = "CR1/http-proof\0" || device_id(16) || time_ms(u64) || var(method)
//          || var(path with query) || H(body) || var(server nonce) || jti(16)
//   ws   = "CR1/ws-proof\0" || challenge(32) || case_id(16) || device_id(16)
//   sig  = Ed25519(DSK, http | ws)

import * as prim from './primitives.js';
import { signWith } from './signer.js';
import { concat, fixed, tag, u64, utf8, uuidBytes, varBytes } from './encoding.js';

export const HTTP_TAG = tag('CR1/http-proof');
export const WS_TAG = tag('CR1/ws-proof');
export const JTI_LEN = 16;
export const CHALLENGE_LEN = 32;

export function httpProofBytes({ deviceId, timeMs, method, path, body, nonce, jti }) {
  return concat(HTTP_TAG, uuidBytes(deviceId), u64(timeMs), varBytes(utf8(method.toUpperCase())),
    varBytes(utf8(path)), prim.sha512(body), varBytes(utf8(nonce)), fixed(jti, JTI_LEN, 'jti'));
}

export async function signHttpProof(signer, fields) {
  return signWith(signer, httpProofBytes(fields));
}

/** Throws CryptoError (bad_signature, non_canonical_signature, ...). */
export function verifyHttpProof(dskPub, sig, fields) {
  prim.verify(dskPub, httpProofBytes(fields), sig);
}

export function wsProofBytes(challenge, caseId, deviceId) {
  return concat(WS_TAG, fixed(challenge, CHALLENGE_LEN, 'challenge'), uuidBytes(caseId), uuidBytes(deviceId));
}

export async function signWsProof(signer, challenge, caseId, deviceId) {
  return signWith(signer, wsProofBytes(challenge, caseId, deviceId));
}

export function verifyWsProof(dskPub, sig, challenge, caseId, deviceId) {
  prim.verify(dskPub, wsProofBytes(challenge, caseId, deviceId), sig);
}

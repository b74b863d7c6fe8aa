// CR1 cryptographic core for the browser client (ES modules over tweetnacl; the
// device signing key may be a WebCrypto key, see signer.js).
// Byte-identical with collab/crypto/ (Python); layouts in docs/protocol-crypto.md.
// Every rejection throws CryptoError with a stable `.code`.

export { CODES, CryptoError } from './errors.js';
export {
  Reader, compareBytes, concat, equal, fromHex, isUuid, randomUuid, toHex, uuidBytes,
  uuidFromBytes,
} from './encoding.js';
export { b64d, b64e } from './wire.js';
export {
  boxOpen, boxSeal, checkEd25519Public, checkX25519Public, ed25519Public, randomBytes,
  secretboxOpen, secretboxSeal, sha512, sign, verify, x25519Public,
} from './primitives.js';
export { DeviceCert, certBytes, makeDeviceCert, verifyDeviceCert } from './devcert.js';
export { Role, Roster, RosterUser } from './roster.js';
export {
  Action, AddDeviceBody, AddUserBody, CreateBody, EnrolDeviceBody, HistoryWrap, LeaveRequest, RemoveDeviceBody,
  RemoveUserBody, RotateBody, SetRoleBody, ShareHistoryBody, actionFor, applyAction, authorize,
  enrolBytes, leaveBytes, parseBody, signEnrol, signLeave,
} from './actions.js';
export {
  LogEntry, Wrap, buildEntry, checkFork, historyPlaintext, keyCommit, makeHistoryBody,
  openHistory, openWrap, sealEntry, verifyChain, verifyEntry, wrapNonce, wrapPlaintext,
} from './log.js';
export {
  AttachmentRef, Envelope, Gap, Header, ReplayGuard, checkSender, decodeBody, encodeBody,
  innerBytes, openEnvelope, sealMessage, verifyEnvelope,
} from './envelope.js';
export {
  AttachmentDecryptor, AttachmentEncryptor, CHUNK_SIZE, Manifest, RootHasher, chunkCount,
  chunkNonce, ciphertextSize, decryptBlob, decryptStream, rootOf,
} from './attachment.js';
export { fingerprintDigits, safetyNumber } from './safety.js';
export {
  checkInvitation, inviteKeypair, inviteProofBytes, inviteStatementBytes, shortCode,
  signInvitation, signInviteProof, verifyInvitationStatement, verifyInviteProof,
} from './invite.js';
export { openPins, pinsKey, pinsSignedBytes, sealPins, signPins, verifyPins } from './pins.js';
export {
  httpProofBytes, signHttpProof, signWsProof, verifyHttpProof, verifyWsProof, wsProofBytes,
} from './devproof.js';
export { backupKey, itemPlaintext, openBackupItem, sealBackupItem } from './keybackup.js';
export {
  RECALL_TAG, Recall, checkRecallNames, headerHash, recallFor, signRecall, verifyRecall,
} from './recall.js';
export {
  asSigner, generateDeviceSigner, seedSigner, signWith, webCryptoEd25519, webCryptoSigner,
} from './signer.js';

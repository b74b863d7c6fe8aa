// A clinician creates a patient invitation bound to this device: a fresh 32-byte
// secret stays on this device and in the link's fragment (which never reaches the
// server); the server gets the invite key and this device's signature over the
// statement naming the case (cr1/invite.js). The patient's browser later proves it
// holds the secret (invite-secret.js), which the admission dialog checks.

import { b64e, randomBytes } from '../cr1/index.js';
import { SECRET_LEN, inviteKeypair, signInvitation } from '../cr1/invite.js';
import { api } from './api.js';
import { base64url } from './invite-secret.js';

/** -> {link (with #k=<secret>), expiresAt}. */
export async function createInvitation(device, caseId) {
  const secret = randomBytes(SECRET_LEN);
  try {
    const { pub } = inviteKeypair(secret);
    const createdMs = Date.now();
    const sig = await signInvitation(device.signer, caseId, device.userId, device.deviceId, pub, createdMs);
    const inv = await api('POST', `/api/cases/${caseId}/invitations`, {
      json: { invite_pub: b64e(pub), invite_sig: b64e(sig), inviter_device: device.deviceId, created_ms: createdMs },
      device: device.deviceId,
    });
    return { link: `${inv.link}#k=${base64url(secret)}`, expiresAt: inv.expires_at };
  } finally {
    secret.fill(0);
  }
}

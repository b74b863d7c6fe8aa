// This browser's keys, in IndexedDB. The device signing key (DSK) is a WebCrypto
// Ed25519 CryptoKey generated with extractable: false and stored as that object:
// script can sign with it, nobody can read its bytes. Only the DSK is such a key. The
// other secrets (key-wrap secret, identity seed, and the DSK seed of a browser set up
// before WebCrypto keys or without WebCrypto Ed25519) are stored AES-GCM-encrypted
// under a non-extractable WebCrypto AES key kept in IndexedDB, and decrypted into page
// memory when loadDevice runs: script running in the page (an XSS) can read them
// then. The encryption keeps them out of plain sight in the profile's files, not from
// the page. Nothing secret goes to localStorage, sessionStorage or URLs.
//
// Also kept here (not secret): per-case memos, so a reload keeps sender_seq
// increasing and notices a server that rolls the membership log back.

import { DeviceCert, b64d, b64e, equal, seedSigner, webCryptoSigner } from '../cr1/index.js';

const DB = 'collab-keys';
const VERSION = 1;
const STORE = 'kv';

let dbPromise = null;

function db() {
  if (!dbPromise) {
    dbPromise = new Promise((resolve, reject) => {
      const req = indexedDB.open(DB, VERSION);
      req.onupgradeneeded = () => req.result.createObjectStore(STORE);
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  }
  return dbPromise;
}

async function tx(mode, fn) {
  const d = await db();
  return new Promise((resolve, reject) => {
    const t = d.transaction(STORE, mode);
    const store = t.objectStore(STORE);
    let result;
    const req = fn(store);
    if (req) req.onsuccess = () => { result = req.result; };
    t.oncomplete = () => resolve(result);
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error);
  });
}

const get = (key) => tx('readonly', (s) => s.get(key));
const put = (key, value) => tx('readwrite', (s) => s.put(value, key));
const del = (key) => tx('readwrite', (s) => s.delete(key));

/** The non-extractable wrapping key of this browser profile (made once). */
async function wrappingKey() {
  let key = await get('wrapping-key');
  if (!key) {
    key = await crypto.subtle.generateKey({ name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
    await put('wrapping-key', key);
    // Another tab may have raced us: use whichever key was stored last.
    key = await get('wrapping-key');
  }
  return key;
}

const ad = (userId) => new TextEncoder().encode(`collab/device-keys/v1/${userId}`);

const SELF_CHECK = new TextEncoder().encode('collab/dsk-self-check/v1\0');

/**
 * Whether a stored DSK CryptoKey is the key of the certificate's dsk_pub. A
 * non-extractable key shows no public bytes, so it signs a random challenge (never
 * sent anywhere) that must verify under dsk_pub.
 */
export async function dskMatches(privateKey, dskPub) {
  const challenge = new Uint8Array(SELF_CHECK.length + 32);
  challenge.set(SELF_CHECK);
  challenge.set(crypto.getRandomValues(new Uint8Array(32)), SELF_CHECK.length);
  try {
    const sig = await crypto.subtle.sign({ name: 'Ed25519' }, privateKey, challenge);
    const pub = await crypto.subtle.importKey('raw', dskPub, { name: 'Ed25519' }, false, ['verify']);
    return await crypto.subtle.verify({ name: 'Ed25519' }, pub, sig, challenge);
  } catch {
    return false; // not an Ed25519 signing key
  }
}

/**
 * Device record: {userId, deviceId, signer, dskKey, dskSeed, dxkSecret, uikSeed, cert
 * (wire), name}. The DSK is `dskKey` (a non-extractable CryptoKey, stored as is) or,
 * for a legacy record, `dskSeed` (stored encrypted); `signer` (cr1 signer.js) signs
 * with whichever it is. Byte fields are Uint8Array in memory, base64 inside the
 * encrypted JSON.
 */
export async function saveDevice(rec) {
  if (!rec.dskKey && !rec.dskSeed) throw new Error('a device record needs its signing key');
  // Never store a DSK whose bytes script could read back out.
  if (rec.dskKey && rec.dskKey.extractable !== false) throw new Error('the device signing key must be non-extractable');
  const key = await wrappingKey();
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const plain = new TextEncoder().encode(JSON.stringify({
    userId: rec.userId,
    deviceId: rec.deviceId,
    dskSeed: rec.dskKey ? null : b64e(rec.dskSeed),
    dxkSecret: b64e(rec.dxkSecret),
    uikSeed: rec.uikSeed ? b64e(rec.uikSeed) : null,
    cert: rec.cert,
    name: rec.name ?? '',
  }));
  const ct = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv, additionalData: ad(rec.userId) }, key, plain));
  plain.fill(0);
  await put(`device:${rec.userId}`, {
    iv, ct, deviceId: rec.deviceId, createdAt: Date.now(), dsk: rec.dskKey ?? null,
  });
}

export async function loadDevice(userId) {
  const stored = await get(`device:${userId}`);
  if (!stored) return null;
  const key = await wrappingKey();
  let plain;
  try {
    plain = new Uint8Array(await crypto.subtle.decrypt(
      { name: 'AES-GCM', iv: stored.iv, additionalData: ad(userId) }, key, stored.ct,
    ));
  } catch {
    return null; // the wrapping key was replaced: these keys are unusable
  }
  const d = JSON.parse(new TextDecoder().decode(plain));
  plain.fill(0);
  const certDsk = DeviceCert.fromWire(d.cert).dskPub;
  let signer;
  let dskSeed = null;
  if (stored.dsk) {
    // A key swapped into the record (or a record mixed up with another device's)
    // would sign under a public key the certificate does not name: refuse it.
    if (!(await dskMatches(stored.dsk, certDsk))) return null;
    signer = webCryptoSigner(stored.dsk, certDsk);
  } else if (d.dskSeed) {
    // Set up before DSKs were WebCrypto keys (or without WebCrypto Ed25519): the seed
    // keeps working through tweetnacl. Its public key is in the certificate and every
    // roster, so it cannot be swapped for a new key in place.
    dskSeed = b64d(d.dskSeed, 32);
    signer = seedSigner(dskSeed);
    if (!equal(signer.publicKey, certDsk)) return null; // not this certificate's key
  } else {
    return null;
  }
  return {
    userId: d.userId,
    deviceId: d.deviceId,
    signer,
    dskKey: stored.dsk ?? null,
    dskSeed,
    dxkSecret: b64d(d.dxkSecret, 32),
    uikSeed: d.uikSeed ? b64d(d.uikSeed, 32) : null,
    cert: d.cert,
    name: d.name,
  };
}

export async function forgetDevice(userId) {
  await del(`device:${userId}`);
}

/** Which stored records belong to `userId` (device keys, case memos, pins). */
export function userRecordKeys(keys, userId) {
  return keys.filter((k) => typeof k === 'string'
    && (k === `device:${userId}` || k === `pins:${userId}` || k.startsWith(`case:${userId}:`)));
}

/** "Forget this browser": every key, memo and pin of this user; and the wrapping key
 * when nothing else it protects (another user's keys, an invitation secret) remains. */
export async function forgetUser(userId) {
  const keys = (await tx('readonly', (s) => s.getAllKeys())) ?? [];
  const mine = userRecordKeys(keys, userId);
  const others = keys.filter((k) => typeof k === 'string' && !mine.includes(k)
    && (k.startsWith('device:') || k.startsWith('invite:')));
  await tx('readwrite', (s) => {
    for (const k of mine) s.delete(k);
    if (!others.length) s.delete('wrapping-key');
  });
  return { deleted: mine.length, wrappingKeyDeleted: !others.length };
}

const emptyMemo = () => ({ headEpoch: -1, headHash: '', senderSeq: 0, lastSeq: 0, backedUp: -1 });

export async function loadMemo(userId, caseId) {
  return { ...emptyMemo(), ...((await get(`case:${userId}:${caseId}`)) ?? {}) };
}

export async function saveMemo(userId, caseId, memo) {
  await put(`case:${userId}:${caseId}`, { ...memo });
}

// --- identity pins (app/pinstore.js): the pins document and the highest version of
// the synced copy seen, so a server that serves an older copy is caught.

export async function loadPins(userId) {
  return (await get(`pins:${userId}`)) ?? null;
}

export async function savePins(userId, { doc, version }) {
  await put(`pins:${userId}`, { doc, version });
}

// --- patient invitation secrets (app/invite-secret.js): the 32-byte secret from the
// link fragment, kept from the invitation page until the patient's proof is posted.
// Encrypted like the device keys; keyed by the invite public key it derives.

const inviteAd = (id) => new TextEncoder().encode(`collab/invite-secret/v1/${id}`);

export async function saveInviteSecret(id, secret) {
  const key = await wrappingKey();
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const ct = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv, additionalData: inviteAd(id) }, key, secret));
  await put(`invite:${id}`, { iv, ct, savedAt: Date.now() });
}

/** [{id, secret, savedAt}] of every stored invitation secret this browser still opens. */
export async function listInviteSecrets() {
  const keys = (await tx('readonly', (s) => s.getAllKeys())) ?? [];
  const out = [];
  const key = await wrappingKey();
  for (const k of keys) {
    if (typeof k !== 'string' || !k.startsWith('invite:')) continue;
    const id = k.slice('invite:'.length);
    const stored = await get(k);
    try {
      const secret = new Uint8Array(await crypto.subtle.decrypt({ name: 'AES-GCM', iv: stored.iv, additionalData: inviteAd(id) }, key, stored.ct));
      out.push({ id, secret, savedAt: stored.savedAt });
    } catch {
      await del(k); // the wrapping key was replaced: unusable
    }
  }
  return out;
}

export async function deleteInviteSecret(id) {
  await del(`invite:${id}`);
}

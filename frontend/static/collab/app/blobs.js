// Encrypted attachments over HTTP: chunked CR1 encryption, upload in parts of
// up to 16 ciphertext chunks, ranged download with every chunk and the root
// checked before any byte is used.

import { AttachmentDecryptor, AttachmentEncryptor, ciphertextSize, concat, b64e } from '../cr1/index.js';
import { CT_CHUNK_SIZE, CHUNK_SIZE } from '../cr1/attachment.js';
import { api } from './api.js';

const PART_CHUNKS = 16;

/** Encrypt and upload; returns the Manifest. progress(doneBytes, totalBytes). */
export async function uploadAttachment(caseId, deviceId, file, progress = () => {}) {
  const { bytes, mime, width, height } = file;
  const total = ciphertextSize(bytes.length);
  const created = await api('POST', `/api/cases/${caseId}/blobs`, { json: { size: total }, device: deviceId });
  const blobId = created.blob_id;
  const enc = new AttachmentEncryptor();
  let part = [];
  let partLen = 0;
  let offset = 0;
  progress(0, total);
  const flush = async () => {
    const body = concat(...part);
    await api('PUT', `/api/blobs/${blobId}/parts/${offset}`, { bytes: body, device: deviceId });
    offset += body.length;
    part = [];
    partLen = 0;
    progress(offset, total);
  };
  for (let i = 0; i < bytes.length; i += CHUNK_SIZE) {
    for (const c of enc.update(bytes.subarray(i, i + CHUNK_SIZE))) {
      part.push(c);
      partLen += 1;
      if (partLen >= PART_CHUNKS) await flush();
    }
  }
  part.push(...enc.finish());
  await flush();
  const manifest = enc.manifest(blobId, { mime, width, height });
  await api('POST', `/api/blobs/${blobId}/complete`, { json: { root: b64e(manifest.root) }, device: deviceId });
  return manifest;
}

/** Download in ranges, decrypt and verify; returns the plaintext bytes. */
export async function downloadAttachment(manifest, deviceId, progress = () => {}) {
  const total = ciphertextSize(manifest.size);
  const dec = new AttachmentDecryptor(manifest);
  const out = [];
  let pending = new Uint8Array(0);
  let offset = 0;
  progress(0, total);
  while (offset < total) {
    const end = Math.min(offset + PART_CHUNKS * CT_CHUNK_SIZE, total) - 1;
    const res = await api('GET', `/api/blobs/${manifest.blobId}`, {
      device: deviceId, headers: { Range: `bytes=${offset}-${end}` }, raw: true,
    });
    const got = new Uint8Array(await res.arrayBuffer());
    if (got.length === 0) throw new Error('the attachment ended early');
    offset += got.length;
    pending = concat(pending, got);
    // Keep the last (possibly final) chunk until we know more data follows.
    let off = 0;
    while (pending.length - off > CT_CHUNK_SIZE || (offset >= total && pending.length - off > 0)) {
      const n = Math.min(CT_CHUNK_SIZE, pending.length - off);
      out.push(dec.update(pending.subarray(off, off + n)));
      off += n;
    }
    pending = pending.slice(off);
    progress(offset, total);
  }
  dec.finalize();
  return concat(...out);
}

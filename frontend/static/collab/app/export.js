// "Export" in the case room: the whole consult as a FHIR R4 Bundle or a printable HTML
// page, read and decrypted in this browser (every page of history, every epoch this
// device holds a key for, the full images) and handed over as a download from a Blob
// URL. Nothing of the export is sent anywhere: the only requests are the reads any
// room makes (case detail, history pages, attachments, names).

import { Role } from '../cr1/index.js';
import { api } from './api.js';
import { downloadAttachment } from './blobs.js';
import { UnavailableMessage } from './casestate.js';
import { h, say } from './dom.js';
import { buildBundle } from './export-fhir.js';
import { buildHtml } from './export-html.js';
import { msInstant, removalOf } from './export-record.js';
import { lookupUser } from './names.js';
import { RECALLED, judgeTombstone } from './recall.js';

const HISTORY_PAGE = 100;
const ROLE_NAMES = { [Role.OWNER]: 'owner', [Role.ADMIN]: 'admin', [Role.MEMBER]: 'member', [Role.PATIENT]: 'patient' };
const IMAGE_MIMES = new Set(['image/jpeg', 'image/png', 'image/webp', 'image/gif']);
const CASE_FIELDS = ['id', 'specialty', 'urgency', 'status', 'opened_by', 'opened_at', 'status_changed_at'];

const imageIndexes = (body) => {
  const info = body?.image;
  if (!info || typeof info !== 'object') return [];
  return ['full', 'original'].filter((k) => Number.isInteger(info[k]) && info[k] >= 0).map((k) => [k, info[k]]);
};

/**
 * The export model (export-record.js) of a case, from verified and decrypted history.
 * A removed message (a tombstone) is judged as the room judges it (recall.js; `removed`
 * is the room's RecallView.removed, what it already judged) and kept as its one line.
 * `progress(what, done, total)`: what is 'messages' or 'images'.
 */
export async function gatherModel({ caseId, session, deviceId, me, removed = new Map() }, progress = () => {}) {
  const detail = await api('GET', `/api/cases/${caseId}`);
  await session.sync();
  // Who opened the case is the genesis entry's author (as in consult-view.js), not the
  // server's opened_by: it decides whose request, reports and time count.
  const requester = session.chain.get(0)?.authorUserId;
  if (!requester) throw Object.assign(new Error('this device does not hold the case\'s first log entry'), { code: 'no_genesis' });
  const total = Number.isInteger(detail.last_seq) ? detail.last_seq : 0;
  const opened = [];
  let after = 0;
  for (;;) {
    const page = await api('GET', `/api/cases/${caseId}/messages?after=${after}&limit=${HISTORY_PAGE}`, { device: deviceId });
    const start = after;
    for (const item of Array.isArray(page.messages) ? page.messages : []) {
      if (Number.isInteger(item?.seq)) after = Math.max(after, item.seq);
      const judged = removed.get(item?.seq);
      if (item && typeof item.removed === 'object' && item.removed !== null) {
        opened.push({ removal: judged?.verdict === RECALLED ? judged
          : judgeTombstone(caseId, item, session.chain.values(), session.seen.get(item.seq)?.[1]?.header ?? null) });
        continue;
      }
      if (judged?.verdict === RECALLED) { // only the sender's word hides content
        opened.push({ removal: judged });
        continue;
      }
      try {
        opened.push({ msg: (await session.open(item)).msg });
      } catch (err) {
        // Verified but not readable here: listed as such. Anything else fails closed.
        if (!(err instanceof UnavailableMessage)) throw err;
        opened.push({ unavailable: err });
      }
    }
    progress('messages', after, Math.max(total, after));
    if (page.more !== true || after <= start) break;
  }
  const roles = new Map();
  for (const epoch of [...session.chain.keys()].sort((a, b) => a - b)) {
    for (const u of session.chain.get(epoch).roster.users) roles.set(u.userId, ROLE_NAMES[u.role]);
  }
  const members = [];
  for (const [userId, role] of roles) {
    const u = await lookupUser(userId);
    const named = u.name && !u.name.startsWith('Member ');
    members.push({ user_id: userId, role, display_name: named ? u.name : '', specialty: u.specialty ?? '' });
  }
  const messages = opened.map(({ msg, unavailable, removal }) => {
    if (removal) {
      // One line, never content; the sender only when a verified recall names them.
      return { seq: removal.seq, sender: removal.verdict === RECALLED ? removal.senderUserId ?? '' : '', sent_ms: 0,
        content_type: '', body: null, unavailable: null, images: [], manifests: [], removed: removalOf(removal) };
    }
    const header = msg ? msg.header : unavailable.header;
    return {
      seq: msg ? msg.seq : unavailable.seq, sender: header.senderUserId, sent_ms: Number(header.sentMs),
      content_type: header.contentType, body: msg ? msg.body : null,
      unavailable: msg ? null : `not available on this device (the key in the entry by ${unavailable.author} could not be opened)`,
      images: [], manifests: msg ? msg.manifests : [], removed: null,
    };
  });
  const wanted = messages.flatMap((m) => (m.body ? imageIndexes(m.body) : [])
    .filter(([, i]) => i < m.manifests.length).map(([kind, i]) => ({ m, kind, i })));
  let done = 0;
  for (const { m, kind, i } of wanted) {
    const manifest = m.manifests[i];
    const data = await downloadAttachment(manifest, deviceId);
    m.images.push({ index: i, mime: IMAGE_MIMES.has(manifest.mime) ? manifest.mime : 'application/octet-stream',
      width: manifest.width, height: manifest.height, kind, data });
    progress('images', ++done, wanted.length);
  }
  for (const m of messages) delete m.manifests;
  const caseFields = Object.fromEntries(CASE_FIELDS.map((k) => [k, detail[k] ?? null]));
  caseFields.id = caseId;
  const statusHistory = (Array.isArray(detail.status_history) ? detail.status_history : [])
    .map((r) => ({ from: r.from ?? null, to: r.to ?? null, by: r.by ?? null, at: r.at ?? null, reason: r.reason ?? null }));
  return { case: caseFields, status_history: statusHistory, members, messages, exported_at: msInstant(Date.now()), exported_by: me, requester };
}

/** Offer `text` as a download (a Blob URL, revoked after the click). */
export function offerDownload(text, type, filename) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h('a', { href: url, download: filename, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** The Export controls in the room's header; `room` is the case room (room-page.js). */
export function wireExport(room) {
  const head = document.querySelector('.room-head');
  if (!head || document.getElementById('export-btn')) return;
  const format = h('select', { id: 'export-format', 'aria-label': 'Export format' },
    h('option', { value: 'fhir' }, 'FHIR R4 Bundle (JSON)'), h('option', { value: 'html' }, 'Printable summary (HTML)'));
  const bar = h('progress', { id: 'export-progress', max: 1, value: 0, hidden: true });
  const status = h('p', { id: 'export-status', class: 'meta', role: 'status', 'aria-live': 'polite' });
  const button = h('button', { type: 'button', id: 'export-btn' }, 'Export');
  const box = h('div', { class: 'export', id: 'export' }, format, button, bar, status);
  head.append(box);
  button.addEventListener('click', async () => {
    if (!room.session) return;
    button.disabled = true;
    bar.hidden = false;
    const show = (what, done, total) => {
      bar.max = Math.max(total, 1);
      bar.value = done;
      say(status, what === 'messages' ? `Reading messages: ${done} of ${total}` : `Decrypting images: ${done} of ${total}`);
    };
    try {
      const model = await gatherModel({
        caseId: room.caseId, session: room.session, deviceId: room.device.deviceId, me: room.me, removed: room.recall?.removed,
      }, show);
      say(status, 'Building the export on this device…');
      const short = room.caseId.slice(0, 8);
      if (format.value === 'fhir') {
        const bundle = await buildBundle(model, (done, total) => show('messages', done, total));
        offerDownload(`${JSON.stringify(bundle, null, 2)}\n`, 'application/fhir+json', `case-${short}.fhir.json`);
      } else {
        offerDownload(buildHtml(model), 'text/html', `case-${short}.html`);
      }
      say(status, `Exported ${model.messages.length} messages. The file was made in this browser and not uploaded.`);
    } catch (err) {
      say(status, `The export failed: ${err.code ?? err.message}`, 'error');
    } finally {
      button.disabled = false;
      bar.hidden = true;
    }
  });
}

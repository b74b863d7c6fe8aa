// The consult as one printable HTML page, built in this browser after local
// decryption: self-contained (styles inline, images as data: URLs), every text escaped,
// and a Content-Security-Policy that lets the file run no script and load nothing.
// The same page collab/client/export/html.py writes.

import { base64, escapeHtml } from './export-fhir.js';
import {
  billing, consultRequest, member, msInstant, removalLine, reports, textOf, timeTotals, warningText,
} from './export-record.js';

export const CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'";
const IMAGE_MIMES = new Set(['image/jpeg', 'image/png', 'image/webp', 'image/gif']);
const STYLE = `
body{font:11pt/1.4 system-ui,sans-serif;color:#111;margin:2em auto;max-width:48em;padding:0 1em}
h1{font-size:16pt}h2{font-size:13pt;border-bottom:1px solid #999;margin-top:1.6em}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em}dt{font-weight:600}dd{margin:0}
.text{white-space:pre-wrap}.meta{color:#555;font-size:9pt}
ol.messages{list-style:none;padding:0}ol.messages li{border-top:1px solid #ddd;padding:.4em 0}
img{max-width:100%;height:auto}.report{border:1px solid #999;padding:.5em 1em;margin:.5em 0}
.superseded{opacity:.7}table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.2em .5em}
@media print{body{margin:0;max-width:none}a{color:inherit}li,.report,figure{break-inside:avoid}
h2{break-after:avoid}}
`;
// eslint-disable-next-line no-control-regex
const CONTROLS = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/g;

export const esc = (v) => escapeHtml(String(v).replace(CONTROLS, ''));

const dl = (rows) => `<dl>${rows.filter(([, v]) => v !== null && v !== undefined && v !== '')
  .map(([k, v]) => `<dt>${esc(k)}</dt><dd class="text">${esc(v)}</dd>`).join('')}</dl>`;

export function buildHtml(model) {
  const c = model.case;
  const name = (userId) => {
    const m = member(model, userId);
    return m && m.display_name ? m.display_name : `user ${String(userId).slice(0, 8)}`;
  };
  const out = [`<h1>Consult ${esc(c.id)}</h1>`, dl([['Specialty', c.specialty], ['Urgency', c.urgency], ['Status', c.status],
    ['Opened', c.opened_at], ['Opened by', name(model.requester)], ['Exported', model.exported_at], ['Exported by', name(model.exported_by)]])];
  const request = consultRequest(model);
  out.push('<h2>Request</h2>');
  if (!request) {
    out.push('<p>No structured consult request was sent in this case.</p>');
  } else {
    out.push(dl([['Requested by', name(request.message.sender)], ['Sent', msInstant(request.message.sent_ms)],
      ['Amends', request.amends ? `message #${request.amends}` : null], ['Reason', request.reason], ['Question', request.question],
      ['History', request.history], ['Medications', request.medications], ['Tried', request.tried], ['Urgency', request.urgency],
      ['Call-back', [request.callbackMethod, request.callbackDetail].filter((v) => v).join(' ')],
      ['Patient consent', request.patientConsent ? 'noted by the requester' : 'not noted']]));
  }
  out.push('<h2>Reports</h2>');
  const found = reports(model);
  for (const r of found) {
    const note = r.supersededBy ? ` (superseded by the report of message #${r.supersededBy})` : '';
    out.push(`<section class="${r.supersededBy ? 'report superseded' : 'report'}"><p class="meta">Report of message #${r.message.seq} by `
      + `${esc(name(r.message.sender))}, ${esc(msInstant(r.message.sent_ms))}${esc(note)}</p>${dl([
        ['Assessment', r.assessment], ['Recommendations', r.recommendations], ['Follow-up', r.followUp],
        ['Referral needed', r.referralNeeded ? 'yes' : 'no'],
        ['Time stated', r.minutes !== null ? `${r.minutes} minutes (${r.firstDate} to ${r.lastDate})` : null],
        ['Advice', r.billing.warnings.map(warningText).join(' ')]])}</section>`);
  }
  if (!found.length) out.push('<p>No report yet.</p>');
  const b = billing(model);
  const yes = (v) => (v ? 'yes' : 'no');
  out.push(`<h2>Time</h2>${dl([
    ...timeTotals(model).map((t) => [`Time entries of ${name(t.userId)}`, `${t.minutes} minutes in ${t.entries} entries, ${t.firstDate} to ${t.lastDate}`]),
    ['Cumulative minutes', b.minutes], ['Date range', `${b.firstDate || '-'} to ${b.lastDate || '-'}`],
    ['Request reason present', yes(b.reasonPresent)], ['Written report present', yes(b.reportPresent)],
    ['Patient consent noted', yes(b.patientConsent)]])}`);
  out.push(`<h2>Status history</h2><table><tr><th>When</th><th>From</th><th>To</th><th>By</th><th>Reason</th></tr>${
    model.status_history.map((row) => `<tr><td>${esc(row.at ?? '')}</td><td>${esc(row.from ?? '')}</td><td>${esc(row.to ?? '')}</td>`
      + `<td>${esc(name(String(row.by)))}</td><td>${esc(row.reason ?? '')}</td></tr>`).join('')}</table>`);
  out.push(`<h2>Members</h2><ul>${model.members.map((m) => `<li>${esc(name(m.user_id))} (${esc(m.role)}${m.specialty ? `, ${esc(m.specialty)}` : ''})</li>`).join('')}</ul>`);
  const message = (m) => {
    if (m.removed) { // recalled or purged: one line, never content
      const by = m.sender ? ` · ${esc(name(m.sender))}` : '';
      return `<li class="removed"><p class="meta">#${m.seq}${by}</p><p class="text">[${esc(removalLine(m.removed))}]</p></li>`;
    }
    const head = `<p class="meta">#${m.seq} · ${esc(msInstant(m.sent_ms))} · ${esc(name(m.sender))} · ${esc(m.content_type)}</p>`;
    if (m.unavailable !== null && m.unavailable !== undefined) return `<li>${head}<p class="text">[${esc(m.unavailable)}]</p></li>`;
    const parts = [head];
    const text = textOf(m);
    if (text) parts.push(`<p class="text">${esc(text)}</p>`);
    for (const image of m.images) {
      if (!IMAGE_MIMES.has(image.mime)) continue;
      const label = image.kind === 'original' ? 'unmarked original' : 'image';
      const w = Number.parseInt(image.width, 10) || 0;
      const h = Number.parseInt(image.height, 10) || 0;
      parts.push(`<figure><img alt="${esc(label)} of message #${m.seq}" width="${w}" height="${h}" src="data:${image.mime};base64,${base64(image.data)}">`
        + `<figcaption class="meta">${esc(label)} ${w}x${h}, ${image.data.length} bytes</figcaption></figure>`);
    }
    return `<li>${parts.join('')}</li>`;
  };
  out.push(`<h2>Messages</h2><ol class="messages">${model.messages.map(message).join('')}</ol>`);
  return `<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="${CSP}">`
    + `<title>Consult ${esc(String(c.id).slice(0, 8))}</title><style>${STYLE}</style></head><body>${out.join('')}</body></html>\n`;
}

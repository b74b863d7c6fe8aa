// The case list and the form that opens a case: a fresh case id, the signed
// genesis entry (POST /api/cases), then the clinical question as the first
// encrypted message on the case socket.

import { CreateBody, DeviceCert, b64d, b64e, randomBytes, randomUuid } from '../cr1/index.js';
import { api } from './api.js';
import { CaseSession } from './casestate.js';
import { readConsultForm } from './consult-form.js';
import { $, errorText, fmtDate, h, replace, say } from './dom.js';
import { uikPublic } from './identity.js';
import { InboxSocket, bumpRow, messagesCell } from './inbox.js';
import { myShortCode, postInviteProofs } from './invite-secret.js';
import { wireOnCallLine } from './oncall-line.js';
import { sendMessage } from './messaging.js';
import { onSessionEnd } from './session.js';
import { RoomSocket } from './socket.js';
import { retentionNote } from './retention.js';

const URGENCY = { routine: 'Routine', soon: 'Soon', urgent: 'Urgent' };
const STATUS = { requested: 'Requested', accepted: 'Accepted', answered: 'Answered', closed: 'Closed' };

async function listCases() {
  const { cases } = await api('GET', '/api/cases');
  const rows = $('#case-rows');
  if (!cases.length) {
    say($('#cases-status'), 'You are not in any case yet.');
    $('#case-table').hidden = true;
    return;
  }
  replace(rows, ...cases.map((c) => h('tr', { class: c.urgency === 'urgent' ? 'urgent' : '', dataset: { case: c.id } },
    h('td', {}, h('a', { href: `/cases/${c.id}/` }, `Case ${c.id.slice(0, 8)}`)),
    h('td', {}, c.specialty || '—'),
    h('td', {}, h('span', { class: `badge ${c.urgency}` }, URGENCY[c.urgency] ?? c.urgency)),
    h('td', {}, STATUS[c.status] ?? c.status, retentionNote(c.retention)),
    h('td', {}, fmtDate(c.opened_at)),
    messagesCell(c.last_seq, c.unread ?? 0),
    h('td', {}, c.unacknowledged_urgent ? h('span', { class: 'badge urgent' }, `${c.unacknowledged_urgent} urgent`) : ''),
  )));
  $('#case-table').hidden = false;
  say($('#cases-status'), '');
}

/** Connect, wait for hello, send one message, close. */
async function sendFirst(session, device, body, contentType = 'text') {
  let onHello;
  const hello = new Promise((resolve, reject) => {
    onHello = resolve;
    setTimeout(() => reject(new Error('The case room did not answer. Open the case and send your question again.')), 20_000);
  });
  const socket = new RoomSocket(session.caseId, device, {
    onFrame: (frame) => { if (frame.type === 'hello') onHello(frame); },
  });
  socket.connect();
  try {
    await hello;
    return await sendMessage(socket, session, body, contentType, [], { urgent: body.priority === 'urgent' });
  } finally {
    socket.close();
  }
}

function wireOpenForm(ctx) {
  const form = $('#open-case-form');
  if (!form) return;
  const status = $('#open-status');
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const specialty = $('#oc-specialty').value.trim();
    const urgency = $('#oc-urgency').value;
    if (!specialty) {
      say(status, 'Name the specialty you are asking.', 'error');
      $('#oc-specialty').focus();
      return;
    }
    // The structured request (consult-form.js), sent as the case's first message.
    const request = readConsultForm(urgency);
    if (request.error) {
      say(status, request.error, 'error');
      if (request.field) $(request.field).focus();
      return;
    }
    const button = $('#open-case-btn');
    button.disabled = true;
    try {
      say(status, 'Opening the case…');
      const { device } = ctx;
      const uikPub = device.uikSeed ? uikPublic(device.uikSeed) : b64d((await api('GET', '/api/identity')).uik_pub, 32);
      const session = new CaseSession(randomUuid(randomBytes), device);
      const genesis = await session.genesis(new CreateBody(uikPub, [DeviceCert.fromWire(device.cert)]));
      await api('POST', '/api/cases', {
        json: { genesis: b64e(genesis.encode()), specialty, urgency }, device: device.deviceId,
      });
      session.accept([genesis]);
      await session.loadMemo();
      await session.remember();
      say(status, 'Sending your question…');
      await sendFirst(session, device, request.body, 'consult_request');
      location.assign(`/cases/${session.caseId}/`);
    } catch (err) {
      button.disabled = false;
      say(status, errorText(err), 'error');
    }
  });
  $('#open-case-btn').disabled = false; // disabled in the page until this handler is on
}

async function listQueue() {
  const list = $('#queue');
  if (!list) return;
  const { consults } = await api('GET', '/api/consults/queue');
  say($('#queue-status'), consults.length ? '' : 'No open consults for your specialty.');
  replace(list, ...consults.map((c) => {
    const who = c.requested_by?.display_name ?? 'A colleague';
    const org = c.requested_by?.organisation ? ` (${c.requested_by.organisation})` : '';
    const button = h('button', { type: 'button', 'aria-label': `Claim the consult from ${who}` }, 'Claim');
    button.addEventListener('click', () => claim(c, button));
    return h('li', { class: c.urgency === 'urgent' ? 'urgent' : '' },
      h('span', { class: `badge ${c.urgency}` }, URGENCY[c.urgency] ?? c.urgency), ' ',
      `${who}${org}, ${fmtDate(c.requested_at)} `,
      c.offered_until ? h('strong', { class: 'offered' }, `Offered to you first as on-call, until ${fmtDate(c.offered_until)}. `) : null,
      button);
  }));
}

async function claim(consult, button) {
  button.disabled = true;
  try {
    await api('POST', `/api/consults/${consult.case}/claim`);
    replace(button.parentElement, `Claimed. The requesting clinician's device adds you to the case; it then appears in your list.`);
  } catch (err) {
    button.disabled = false;
    say($('#queue-status'), errorText(err), 'error');
  }
}

const NOTICE_TEXT = {
  consult_claimed: 'A specialist claimed your consult',
  consult_offered: 'A consult is offered to you first as on-call',
  join_request: 'Someone is waiting to join a case',
  invitation_accepted: 'A patient accepted your invitation',
  urgent_message: 'New urgent message',
  status_changed: 'A consult changed status',
  urgent_reminder: 'An urgent message still waits for acknowledgement',
  urgent_escalated: 'An urgent message was escalated to you',
  leave_request: 'A member asked to leave a case',
};

/** In-app notifications: an event kind and a case id, never patient information. */
async function listNotices() {
  const { notifications } = await api('GET', '/api/notifications?unread=1');
  const box = $('#notices');
  if (!notifications.length) {
    box.hidden = true;
    return;
  }
  replace($('#notice-list'), ...notifications.map((n) => h('li', {},
    `${NOTICE_TEXT[n.kind] ?? n.kind} · ${fmtDate(n.created_at)} · `,
    n.case ? h('a', { href: `/cases/${n.case}/` }, `Case ${n.case.slice(0, 8)}`) : null)));
  box.hidden = false;
  $('#notices-read').onclick = async (ev) => {
    ev.currentTarget.disabled = true;
    for (const n of notifications) await api('POST', `/api/notifications/${n.id}/read`);
    box.hidden = true;
  };
}

const JOIN_WORDS = { claim: 'You claimed this consult', invite: 'You were invited', patient: 'You accepted an invitation' };

/**
 * Waiting to join: the caller's own pending requests (as the person asked for or as
 * the requester), each with "Withdraw"; for a patient, the short code the care team
 * compares when the invitation link alone does not bind the account. Before that, a
 * patient's browser posts the link proof for an invitation it kept the secret of.
 */
async function listWaiting(ctx) {
  const box = $('#waiting');
  if (!box) return;
  if (ctx.role === 'patient') {
    await postInviteProofs(ctx.device).catch((err) => say($('#waiting-status'), errorText(err), 'error'));
  }
  const { join_requests: requests } = await api('GET', '/api/join-requests');
  const mine = requests.filter((r) => r.status === 'pending');
  replace($('#waiting-list'), ...mine.map((r) => {
    const who = r.user === ctx.userId ? (JOIN_WORDS[r.kind] ?? 'Requested') : 'You asked for someone to join';
    const button = h('button', { type: 'button', 'aria-label': `Withdraw the request for case ${r.case.slice(0, 8)}` }, 'Withdraw');
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        await api('POST', `/api/join-requests/${r.id}/withdraw`, { json: {} });
        replace(button.parentElement, `Request for case ${r.case.slice(0, 8)} withdrawn.`);
      } catch (err) {
        button.disabled = false;
        say($('#waiting-status'), errorText(err), 'error');
      }
    });
    return h('li', { dataset: { join: String(r.id) } }, `${who} · case ${r.case.slice(0, 8)} · ${fmtDate(r.created_at)} `, button);
  }));
  const code = ctx.role === 'patient' && mine.length ? myShortCode(ctx.device) : null;
  $('#waiting-code-box').hidden = !code;
  if (code) $('#waiting-code').textContent = code.join(' ');
  box.hidden = mine.length === 0;
}

export async function casesPage(ctx) {
  wireOpenForm(ctx);
  wireOnCallLine($('#oc-specialty'), $('#oc-oncall'));
  await Promise.all([listCases(), listQueue(), listNotices(), listWaiting(ctx)]);
  // The live case list (inbox.js): new messages, status changes, added and removed
  // cases, escalations and other notifications, without a reload.
  const inbox = new InboxSocket({
    onChange: (frame) => { if (frame.type === 'case_activity') bumpRow(frame); },
    refetch: () => Promise.all([listCases(), listQueue(), listNotices()]),
  });
  onSessionEnd(() => inbox.close());
  inbox.connect();
}

// The admin's retention page (/retention/): the organisation's retention period and
// a legal hold per case. Metadata only: the page needs no device key.

import { api } from './api.js';
import { $, errorText, fmtDate, h, replace, say } from './dom.js';
import { retentionNote } from './retention.js';

const STATUS = { requested: 'Requested', accepted: 'Accepted', answered: 'Answered', closed: 'Closed' };

function policyText(policy) {
  const rule = policy.lifespan_days
    ? `Closed cases are deleted ${policy.lifespan_days === 1 ? '1 day' : `${policy.lifespan_days} days`} after closing.`
    : 'Nothing is deleted: no retention period is set.';
  const by = policy.updated_by ? ` Set by ${policy.updated_by.display_name} on ${fmtDate(policy.updated_at)}.` : '';
  return rule + by;
}

function showPolicy(policy) {
  say($('#policy-now'), policyText(policy));
  $('#policy-never').checked = policy.lifespan_days === null;
  $('#policy-days').value = policy.lifespan_days ?? '';
  $('#policy-days').disabled = policy.lifespan_days === null;
}

async function listHolds() {
  const { cases } = await api('GET', '/api/retention/cases');
  if (!cases.length) {
    say($('#holds-status'), 'There are no cases yet.');
    return;
  }
  replace($('#hold-rows'), ...cases.map((c) => {
    const label = `case ${c.id.slice(0, 8)}`;
    const held = c.retention.legal_hold;
    const button = h('button', {
      type: 'button', class: held ? '' : 'danger',
      'aria-label': held ? `Release the legal hold on ${label}` : `Place a legal hold on ${label}`,
    }, held ? 'Release hold' : 'Place hold');
    button.addEventListener('click', () => toggleHold(c, button));
    return h('tr', { dataset: { case: c.id } },
      h('td', {}, `Case ${c.id.slice(0, 8)}`),
      h('td', {}, c.specialty || '—'),
      h('td', {}, STATUS[c.status] ?? c.status),
      h('td', {}, retentionNote(c.retention)),
      h('td', {}, held ? `Since ${fmtDate(c.retention.legal_hold_at)} ` : '', button));
  }));
  $('#hold-table').hidden = false;
  say($('#holds-status'), '');
}

async function toggleHold(c, button) {
  button.disabled = true;
  try {
    await api(c.retention.legal_hold ? 'DELETE' : 'POST', `/api/retention/cases/${c.id}/hold`);
    await listHolds();
    say($('#holds-status'), c.retention.legal_hold
      ? `The hold on case ${c.id.slice(0, 8)} is released.` : `Case ${c.id.slice(0, 8)} is on legal hold.`);
  } catch (err) {
    button.disabled = false;
    say($('#holds-status'), errorText(err), 'error');
  }
}

function wirePolicyForm() {
  const never = $('#policy-never');
  const days = $('#policy-days');
  never.addEventListener('change', () => { days.disabled = never.checked; });
  $('#policy-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const status = $('#policy-status');
    let value = null;
    if (!never.checked) {
      value = Number(days.value);
      if (!Number.isInteger(value) || value < 1 || value > 36500) {
        say(status, 'Give a whole number of days from 1 to 36500, or choose "Never delete".', 'error');
        days.focus();
        return;
      }
    }
    try {
      showPolicy(await api('PUT', '/api/retention/policy', { json: { lifespan_days: value } }));
      say(status, 'Saved.');
      await listHolds();
    } catch (err) {
      say(status, errorText(err), 'error');
    }
  });
}

export async function retentionPage() {
  wirePolicyForm();
  showPolicy(await api('GET', '/api/retention/policy'));
  await listHolds();
}

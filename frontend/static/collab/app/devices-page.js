// The user's devices with remote revocation; for administrators, revoking another
// user's device with a reason (POST /api/devices/<id>/revoke {reason}).

import { api } from './api.js';
import { $, errorText, fmtDate, h, replace, say } from './dom.js';
import { forgetUser } from './keystore.js';

async function render(ctx) {
  const { devices } = await api('GET', '/api/devices');
  const rows = devices.map((d) => {
    const current = d.device_id === ctx.device.deviceId;
    const state = d.revoked_at ? `Revoked ${fmtDate(d.revoked_at)}` : 'Active';
    let action = null;
    if (!d.revoked_at) {
      const cell = h('span', {});
      const ask = h('button', { type: 'button', class: 'danger' }, current ? 'Revoke this browser' : 'Revoke');
      ask.addEventListener('click', () => {
        replace(cell,
          h('button', { type: 'button', class: 'danger', onclick: (ev) => revoke(ctx, d, current, ev.currentTarget) },
            `Confirm: revoke ${d.name || d.device_id.slice(0, 8)}`),
          ' ',
          h('button', { type: 'button', onclick: () => { replace(cell, ask); ask.focus(); } }, 'Cancel'));
        cell.querySelector('button').focus();
      });
      cell.append(ask);
      action = cell;
    }
    return h('tr', { class: d.revoked_at ? 'revoked' : '' },
      h('td', {}, d.name || 'Unnamed device', current ? h('strong', {}, ' (this browser)') : null),
      h('td', {}, h('code', {}, d.device_id.slice(0, 8))),
      h('td', {}, fmtDate(d.created_at)),
      h('td', {}, state),
      h('td', {}, action));
  });
  replace($('#device-rows'), ...rows);
  $('#device-table').hidden = false;
  $('#this-device').textContent = `This browser is device ${ctx.device.deviceId.slice(0, 8)} (“${ctx.device.name || 'unnamed'}”). `
    + 'Its secret keys are stored encrypted in this browser under a key the browser cannot export.';
}

async function revoke(ctx, device, current, button) {
  button.disabled = true;
  try {
    await api('POST', `/api/devices/${device.device_id}/revoke`, { json: { reason: 'revoked by its user' } });
    if (current) {
      await forgetUser(ctx.userId);
      say($('#devices-status'), 'This browser was revoked and its keys erased. Set it up again to keep using it here.');
      setTimeout(() => location.assign('/keys/'), 1500);
      return;
    }
    say($('#devices-status'), `Device ${device.name || device.device_id.slice(0, 8)} was revoked.`);
    await render(ctx);
  } catch (err) {
    button.disabled = false;
    say($('#devices-status'), errorText(err), 'error');
  }
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

async function adminShowUser(ctx, userId) {
  const status = $('#admin-status');
  const keys = await api('GET', `/api/users/${userId}/keys`);
  const name = keys.display_name || userId.slice(0, 8);
  if (!keys.devices.length) {
    replace($('#admin-devices'));
    say(status, `${name} has no active devices.`);
    return;
  }
  say(status, `${name}: ${keys.devices.length} active device${keys.devices.length === 1 ? '' : 's'}.`);
  replace($('#admin-devices'), h('ul', { class: 'plain' }, ...keys.devices.map((d) => {
    const reasonId = `reason-${d.device_id}`;
    const input = h('input', { id: reasonId, required: true, maxlength: 200, autocomplete: 'off' });
    const button = h('button', { type: 'button', class: 'danger' }, `Revoke ${d.name || d.device_id.slice(0, 8)}`);
    button.addEventListener('click', async () => {
      const reason = input.value.trim();
      if (!reason) {
        say(status, 'Give a reason for revoking this device.', 'error');
        input.focus();
        return;
      }
      button.disabled = true;
      try {
        await api('POST', `/api/devices/${d.device_id}/revoke`, { json: { reason } });
        await adminShowUser(ctx, userId);
        say(status, `Device ${d.name || d.device_id.slice(0, 8)} of ${name} was revoked. ${status.textContent}`);
      } catch (err) {
        button.disabled = false;
        say(status, errorText(err), 'error');
      }
    });
    return h('li', { dataset: { device: d.device_id } },
      h('span', {}, `${d.name || 'Unnamed device'} `, h('code', {}, d.device_id.slice(0, 8)), ' '),
      h('label', { for: reasonId }, `Reason for revoking ${d.device_id.slice(0, 8)}`), ' ', input, ' ', button);
  })));
}

function wireAdmin(ctx) {
  if (ctx.role !== 'admin') return;
  $('#admin-revoke').hidden = false;
  $('#admin-lookup-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const q = $('#admin-user').value.trim();
    const status = $('#admin-status');
    replace($('#admin-results'));
    replace($('#admin-devices'));
    try {
      if (UUID_RE.test(q)) {
        await adminShowUser(ctx, q.toLowerCase());
        return;
      }
      const { users } = await api('GET', `/api/directory?q=${encodeURIComponent(q)}`);
      if (!users.length) {
        say(status, 'No user matches (patients are found by their user id).', 'error');
        return;
      }
      say(status, `${users.length} match${users.length === 1 ? '' : 'es'}.`);
      replace($('#admin-results'), ...users.map((u) => h('li', {},
        h('button', { type: 'button', onclick: () => adminShowUser(ctx, u.id).catch((err) => say(status, errorText(err), 'error')) },
          `Show devices of ${u.display_name}`))));
    } catch (err) {
      say(status, errorText(err), 'error');
    }
  });
}

export async function devicesPage(ctx) {
  wireAdmin(ctx);
  await render(ctx);
  say($('#devices-status'), '');
}

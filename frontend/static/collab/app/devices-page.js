// The user's devices with remote revocation.

import { api } from './api.js';
import { $, errorText, fmtDate, h, replace, say } from './dom.js';
import { forgetDevice } from './keystore.js';

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
      await forgetDevice(ctx.userId);
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

export async function devicesPage(ctx) {
  await render(ctx);
  say($('#devices-status'), '');
}

// Entry module of the browser client. The page shell (server-rendered, see
// collab/templates/app/) says which page this is in <body data-page=...>.

import { api, useDevice } from './api.js';
import { forgetDevice, loadDevice } from './keystore.js';
import { startIdleWatch } from './session.js';
import { errorText, h } from './dom.js';
import { keysPage } from './keys-page.js';
import { casesPage } from './cases-page.js';
import { roomPage } from './room-page.js';
import { devicesPage } from './devices-page.js';
import { oncallPage } from './oncall-page.js';
import { escalationPage } from './escalation-page.js';
import { retentionPage } from './retention-page.js';
import { wireSignOut } from './forget.js';

const data = document.body.dataset;

// The app's forms are sent by their page's script. Until it is wired (after the device
// loads), a click or Enter must not send one natively: a GET would put a clinical
// question in the URL, the history and the server's logs.
document.addEventListener('submit', (ev) => {
  if (ev.target instanceof HTMLFormElement && ev.target.method === 'get') ev.preventDefault();
}, true);

function fatal(err) {
  const main = document.getElementById('main');
  const box = h('p', { class: 'error', role: 'alert', id: 'app-error' }, errorText(err));
  document.getElementById('app-error')?.remove();
  main.prepend(box);
}

async function boot() {
  startIdleWatch(data.idleTimeout);
  const ctx = { userId: data.userId, role: data.role };
  wireSignOut(ctx);
  if (data.page === 'keys') {
    await keysPage(ctx);
    return;
  }
  if (data.page === 'retention') { // metadata only: no device key needed
    await retentionPage(ctx);
    return;
  }
  if (data.page === 'escalation') { // metadata only: no device key needed
    await escalationPage(ctx);
    return;
  }
  const device = await loadDevice(ctx.userId);
  const setup = `/keys/?next=${encodeURIComponent(location.pathname)}`;
  if (!device) {
    location.replace(setup);
    return;
  }
  // A device revoked elsewhere (or unknown to the server) cannot be used again.
  const { devices } = await api('GET', '/api/devices');
  const registered = devices.find((d) => d.device_id === device.deviceId);
  if (!registered || registered.revoked_at) {
    await forgetDevice(ctx.userId);
    location.replace(setup);
    return;
  }
  useDevice(device);
  ctx.device = device; // also what "forget this browser" revokes
  ctx.devices = devices;
  if (data.page === 'room') await roomPage(ctx, data.case);
  else if (data.page === 'devices') await devicesPage(ctx);
  else if (data.page === 'oncall') await oncallPage(ctx);
  else await casesPage(ctx);
}

boot().catch(fatal);
window.addEventListener('unhandledrejection', (ev) => {
  ev.preventDefault();
  fatal(ev.reason);
});

// First sign-in on this browser: make the identity (first device of the user)
// or recover it with the recovery key (a new device), then register this
// device with a certificate signed by the identity key.

import { b64d, b64e, equal, randomBytes } from '../cr1/index.js';
import { api, ApiError } from './api.js';
import { $, errorText, say } from './dom.js';
import {
  defaultDeviceName, formatRecoveryKey, newDevice, newRecoveryKey, openIdentityBackup,
  parseRecoveryKey, recoveryGroups, sealIdentityBackup, uikPublic,
} from './identity.js';
import { postInviteProofs } from './invite-secret.js';
import { forgetDevice, loadDevice, saveDevice } from './keystore.js';

function nextUrl() {
  const next = new URLSearchParams(location.search).get('next') ?? '/';
  // Same-origin paths only.
  return /^\/(?!\/)[\w\-/.]*$/.test(next) ? next : '/';
}

async function register(userId, uikSeed, name) {
  const device = await newDevice(userId, uikSeed, name || defaultDeviceName());
  await api('POST', '/api/devices', { json: { cert: device.cert, name: device.name } });
  await saveDevice(device);
  // A patient who came through an invitation link: prove it now that the identity key
  // exists (the case list tries again if this fails).
  await postInviteProofs(device).catch(() => {});
  return device;
}

function showError(err) {
  say($('#keys-error'), errorText(err), 'error');
}

function pickGroups(count) {
  const picks = new Set();
  const rnd = randomBytes(8);
  let i = 0;
  while (picks.size < 2) picks.add(rnd[i++ % 8] % count);
  return [...picks].sort((a, b) => a - b);
}

function newIdentity(userId) {
  const uikSeed = randomBytes(32);
  const recovery = newRecoveryKey();
  const groups = recoveryGroups(recovery);
  const [a, b] = pickGroups(groups.length);
  $('#recovery-key').textContent = formatRecoveryKey(recovery);
  $('#confirm-label').textContent = `To confirm you saved it, type group ${a + 1} and group ${b + 1} of your recovery key (separated by a space)`;
  $('#device-name-new').value = defaultDeviceName();
  $('#new-identity').hidden = false;
  say($('#keys-status'), '');
  const form = $('#confirm-form');
  let sealed = null;
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    say($('#keys-error'), '');
    const typed = $('#confirm-groups').value.toUpperCase().replace(/[^A-Z0-9]/g, '');
    if (typed !== groups[a] + groups[b]) {
      say($('#keys-error'), `That does not match groups ${a + 1} and ${b + 1}. Check what you wrote down and try again.`, 'error');
      $('#confirm-groups').focus();
      return;
    }
    const button = form.querySelector('button');
    button.disabled = true;
    try {
      say($('#keys-status'), 'Registering your identity and this device…');
      await api('POST', '/api/identity', { json: { uik_pub: b64e(uikPublic(uikSeed)) } });
      // Sealed once: a retry after a later step failed sends the same bytes, which the
      // server takes as unchanged (replacing a stored backup needs the password).
      sealed ??= b64e(sealIdentityBackup(userId, uikSeed, recovery));
      await api('PUT', '/api/identity/backup', { json: { ciphertext: sealed } });
      await register(userId, uikSeed, $('#device-name-new').value.trim());
      recovery.fill(0);
      $('#recovery-key').textContent = '';
      say($('#keys-status'), 'This browser is ready.');
      location.replace(nextUrl());
    } catch (err) {
      button.disabled = false;
      if (err instanceof ApiError && err.code === 'identity_exists') {
        showError(new Error('Another device set up your identity meanwhile. Reload this page and use your recovery key.'));
      } else {
        showError(err);
      }
    }
  });
  $('#confirm-groups').focus();
}

function recover(userId, registeredUik) {
  $('#recover').hidden = false;
  $('#device-name-recover').value = defaultDeviceName();
  say($('#keys-status'), '');
  const form = $('#recover-form');
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    say($('#keys-error'), '');
    const button = form.querySelector('button');
    button.disabled = true;
    try {
      const key = parseRecoveryKey($('#recover-key').value);
      const backup = await api('GET', '/api/identity/backup');
      const uikSeed = openIdentityBackup(b64d(backup.ciphertext), key, userId);
      key.fill(0);
      if (!equal(uikPublic(uikSeed), registeredUik)) {
        throw new Error('The backup does not hold your registered identity key. Contact your administrator.');
      }
      say($('#keys-status'), 'Registering this device…');
      await register(userId, uikSeed, $('#device-name-recover').value.trim());
      $('#recover-key').value = '';
      location.replace(nextUrl());
    } catch (err) {
      button.disabled = false;
      showError(err);
    }
  });
  $('#recover-key').focus();
}

export async function keysPage({ userId }) {
  const existing = await loadDevice(userId);
  if (existing) {
    const { devices } = await api('GET', '/api/devices');
    const mine = devices.find((d) => d.device_id === existing.deviceId);
    if (mine && !mine.revoked_at) {
      location.replace(nextUrl());
      return;
    }
    await forgetDevice(userId);
  }
  const keys = await api('GET', `/api/users/${userId}/keys`);
  if (!keys.uik_pub) newIdentity(userId);
  else recover(userId, b64d(keys.uik_pub, 32));
}

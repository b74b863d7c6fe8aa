// Sign-out, and "Sign out and forget this browser": revoke this device on the server
// (POST /api/devices/<id>/revoke), delete every key, case memo and identity pin of
// this user from IndexedDB (and the wrapping key when no other user's keys remain),
// then sign out. A plain sign-out keeps them. The sign-in page then says which
// happened (?reason=forgotten or ?reason=signed_out).

import { api, quiesce } from './api.js';
import { forgetUser } from './keystore.js';
import { replace, h } from './dom.js';

async function signOut(reason) {
  const form = document.getElementById('signout-form');
  await quiesce();
  try {
    await fetch(form.action, {
      method: 'POST', body: new FormData(form), credentials: 'same-origin', redirect: 'manual', cache: 'no-store',
    });
  } catch { /* the sign-in page follows anyway */ }
  location.assign(`/accounts/login/?reason=${reason}`);
}

/** Revoke, wipe, sign out. Exported for the tests' sake of naming what happens. */
export async function forgetThisBrowser(ctx) {
  if (ctx.device) {
    try {
      await api('POST', `/api/devices/${ctx.device.deviceId}/revoke`, {
        json: { reason: 'forgotten by its user (sign out and forget this browser)' },
      });
    } catch (err) {
      // Already revoked, or the session just ended with it: the keys go anyway.
      if (!(err?.status === 401 || err?.status === 403 || err?.status === 404)) throw err;
    }
  }
  await forgetUser(ctx.userId);
  await signOut('forgotten');
}

export function wireSignOut(ctx) {
  const form = document.getElementById('signout-form');
  form?.addEventListener('submit', (ev) => {
    ev.preventDefault();
    signOut('signed_out');
  });
  const box = document.getElementById('forget-box');
  const ask = document.getElementById('forget-btn');
  if (!box || !ask) return;
  ask.hidden = false;
  ask.addEventListener('click', () => {
    const confirm = h('button', { type: 'button', class: 'danger', onclick: async (ev) => {
      ev.currentTarget.disabled = true;
      ev.currentTarget.textContent = 'Forgetting this browser…';
      try {
        await forgetThisBrowser(ctx);
      } catch (err) {
        ev.currentTarget.disabled = false;
        ev.currentTarget.textContent = `Could not forget this browser (${err.code ?? err.message}); try again`;
      }
    } }, 'Confirm: forget this browser');
    replace(box, confirm, ' ', h('button', { type: 'button', onclick: () => { replace(box, ask); ask.focus(); } }, 'Cancel'));
    confirm.focus();
  });
}

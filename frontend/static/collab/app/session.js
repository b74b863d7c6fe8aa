// Automatic logoff: the server ends a session after IDLE_TIMEOUT_SECONDS
// without a person's action (sockets count send/typing/ack_urgent frames, never the
// read receipts the page sends by itself). This module
// mirrors that clock, warns a minute before, lets the user stay signed in,
// and after the end shows "signed out after inactivity" and goes to the
// sign-in page. Keyboard and pointer input count as activity.

const LOGIN_IDLE = '/accounts/login/?reason=idle';
const LOGIN = '/accounts/login/';
let warnMs = 60_000; // warn this long before the end (a quarter of short timeouts)
let touchEveryMs = 30_000;

let timeoutMs = 15 * 60 * 1000;
let lastServer = Date.now();
let lastInput = Date.now();
let ended = false;
let timer = null;
let touching = false;
const endListeners = [];

function banner() {
  return document.getElementById('session-banner');
}

/** A request the server counts as a person's action reset its idle clock (API reads and
 * background requests do not: api.js and socket.js call this only for the others). */
export function noteServerActivity(at = Date.now()) {
  lastServer = Math.max(lastServer, at);
}

export function onSessionEnd(fn) {
  endListeners.push(fn);
}

export function isEnded() {
  return ended;
}

/** The session is over: say why, then go to the sign-in page. */
export function sessionEnded(reason = 'idle') {
  if (ended) return;
  ended = true;
  clearInterval(timer);
  for (const fn of endListeners) {
    try { fn(reason); } catch { /* leaving anyway */ }
  }
  const el = banner();
  if (el) {
    el.hidden = false;
    el.className = 'session-banner ended';
    el.setAttribute('role', 'alert');
    el.textContent = reason === 'idle'
      ? 'You were signed out after inactivity. Taking you to the sign-in page…'
      : 'Your session has ended. Taking you to the sign-in page…';
  }
  setTimeout(() => location.assign(reason === 'idle' ? LOGIN_IDLE : LOGIN), 1500);
}

/** Tell the server this person is here (after their input, or "Stay signed in"). API
 * reads do not count as activity, opening a page does: a HEAD of the home page is that
 * request without its body. An ended session answers with a redirect to sign-in. */
async function touch() {
  if (touching || ended) return;
  touching = true;
  try {
    const res = await fetch('/', {
      method: 'HEAD', credentials: 'same-origin', cache: 'no-store', redirect: 'manual',
    });
    if (res.type === 'opaqueredirect' || res.status === 401 || (res.status >= 300 && res.status < 400)) sessionEnded('idle');
    else if (res.ok) noteServerActivity();
  } catch {
    /* offline: the next tick tries again */
  } finally {
    touching = false;
  }
}

function tick() {
  if (ended) return;
  const now = Date.now();
  // User input since the server last heard from us keeps the session alive.
  if (lastInput > lastServer && now - lastServer > touchEveryMs) touch();
  const left = lastServer + timeoutMs - now;
  const el = banner();
  if (left <= 0) {
    sessionEnded('idle');
  } else if (left <= warnMs) {
    if (el && el.hidden) {
      el.hidden = false;
      el.className = 'session-banner warning';
      el.setAttribute('role', 'alert');
      el.replaceChildren(
        document.createTextNode('You will be signed out soon because of inactivity. '),
        Object.assign(document.createElement('button'), {
          type: 'button', textContent: 'Stay signed in', onclick: () => { lastInput = Date.now(); touch().then(hideWarning); },
        }),
      );
    }
  } else {
    hideWarning();
  }
}

function hideWarning() {
  const el = banner();
  if (el && !ended && el.classList.contains('warning')) {
    el.hidden = true;
    el.replaceChildren();
  }
}

export function startIdleWatch(seconds) {
  timeoutMs = Math.max(10, Number(seconds) || 900) * 1000;
  warnMs = Math.min(60_000, timeoutMs / 4);
  touchEveryMs = Math.min(30_000, timeoutMs / 4);
  lastServer = Date.now(); // the page itself was a request
  for (const type of ['keydown', 'pointerdown', 'wheel', 'touchstart']) {
    addEventListener(type, () => { lastInput = Date.now(); }, { passive: true, capture: true });
  }
  timer = setInterval(tick, 1000);
}

export const loginUrl = LOGIN;

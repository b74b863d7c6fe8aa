// Small DOM helpers. Every element is built with createElement and text
// nodes: no innerHTML anywhere, so decrypted text can never become markup.

/** h('p', {class: 'x', onclick: fn}, 'text', child) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.className = value;
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key in el && typeof value !== 'string') {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

export function $$(selector, root = document) {
  return [...root.querySelectorAll(selector)];
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dateFmt = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
});

export function fmtTime(ms) {
  return timeFmt.format(new Date(ms));
}

export function fmtDate(value) {
  return dateFmt.format(new Date(value));
}

/** A status line for screen readers and sighted users alike. */
export function say(el, text, kind = 'status') {
  if (!el) return;
  el.className = kind === 'error' ? 'error' : 'notice';
  el.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  el.textContent = text;
  el.hidden = !text;
}

/** Human text for an error: our ApiError, a CryptoError, or anything else. */
export function errorText(err) {
  if (err?.name === 'CryptoError') return `Security check failed (${err.code}). Nothing was shown or sent.`;
  if (err?.name === 'TrustError') return 'Not signed: a member\'s identity key changed and nobody accepted or verified it yet. Review the warning first.';
  if (err?.name === 'ApiError') return err.detail ? `${err.detail} (${err.code})` : `The server refused: ${err.code}`;
  return err?.message ? String(err.message) : String(err);
}

export const page = () => document.body.dataset;

// The live case list: one socket, /ws/inbox/, for the cases page. The server sends,
// content-free: `case_activity {case, last_seq}` (messages were stored in a case),
// `case_status {case, status, at}`, `case_added {case}`, `case_removed {case}` and the
// user's notifications (`notify`). It never counts as a person's activity, so an open
// case list still signs out when idle (close 4401 -> the sign-in page).
// Reconnects with backoff after a dropped connection, and then asks for a fresh list
// (frames sent while it was away never come).

import { h } from './dom.js';
import { sessionEnded } from './session.js';

const MIN_WAIT_MS = 500;
const MAX_WAIT_MS = 15_000;
// Frames that only say "something changed": the list is fetched again, once a burst.
const REFETCH_MS = 400;

export class InboxSocket {
  /** `onChange(frame)` for every content frame; `refetch()` after a quiet REFETCH_MS. */
  constructor({ onChange = () => {}, refetch = async () => {} } = {}) {
    this.url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws/inbox/`;
    this.onChange = onChange;
    this.refetch = refetch;
    this.backoff = MIN_WAIT_MS;
    this.stopped = false;
    this.ws = null;
    this.timer = null;
    this.greeted = 0;
  }

  connect() {
    if (this.stopped) return;
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onmessage = (ev) => {
      let frame;
      try { frame = JSON.parse(ev.data); } catch { return; }
      if (!frame || typeof frame.type !== 'string') return;
      if (frame.type === 'hello') {
        this.backoff = MIN_WAIT_MS;
        if (this.greeted++) this.soon(); // after a reconnect: what happened meanwhile
        return;
      }
      if (['case_activity', 'case_status', 'case_added', 'case_removed', 'notify'].includes(frame.type)) {
        this.onChange(frame);
        this.soon();
      }
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (ev.code === 4401) {
        this.stopped = true;
        clearTimeout(this.timer); // no refetch with a session that has ended
        sessionEnded('idle');
        return;
      }
      if (this.stopped) return;
      const wait = Math.round(this.backoff / 2 + Math.random() * (this.backoff / 2));
      this.backoff = Math.min(this.backoff * 2, MAX_WAIT_MS);
      setTimeout(() => this.connect(), wait);
    };
  }

  soon() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => { this.refetch().catch(() => {}); }, REFETCH_MS);
  }

  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
  }
}

/** The case list's message cell: how many messages, and how many of others are unread. */
export function messagesCell(lastSeq, unread) {
  return h('td', { class: 'msgs' }, String(lastSeq),
    unread > 0 ? [' ', h('span', { class: 'badge unread' }, `${unread} unread`)] : null);
}

/** A `case_activity` frame, at once: the row's count moves before the list is re-read. */
export function bumpRow(frame, root = document) {
  const row = root.querySelector(`tr[data-case="${CSS.escape(String(frame.case))}"]`);
  const cell = row?.querySelector('td.msgs');
  if (!cell || !Number.isInteger(frame.last_seq)) return false;
  cell.firstChild.textContent = String(frame.last_seq);
  row.classList.add('fresh');
  return true;
}

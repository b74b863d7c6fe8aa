// Active time in a case room: counted only while the person is acting, that is while
// the tab is visible and there was input in the last IDLE_MS (docs/workflow.md §8).
// Pure and driven by the times it is given (the page passes Date.now(); tests a
// frozen clock). The page sends what take() returns as a time_entry of kind "active".

export const IDLE_MS = 60_000;
export const BATCH_MS = 5 * 60_000;
const MINUTE = 60_000;

export class ActiveTime {
  constructor({ idleMs = IDLE_MS, batchMs = BATCH_MS } = {}) {
    this.idleMs = idleMs;
    this.batchMs = batchMs;
    this.visible = true;
    this.lastInput = null;
    this.mark = null; // start of the stretch not yet counted, null while idle or hidden
    this.accrued = 0; // ms counted and not yet sent
    this.startMs = null; // period of what is accrued
    this.endMs = null;
  }

  /** Count the stretch since the mark, up to `at` or the idle cutoff. */
  accrue(at) {
    if (this.mark === null || this.lastInput === null) return;
    const until = Math.min(at, this.lastInput + this.idleMs);
    if (until > this.mark) {
      this.accrued += until - this.mark;
      if (this.startMs === null) this.startMs = this.mark;
      this.endMs = until;
    }
    this.mark = at < this.lastInput + this.idleMs ? Math.max(this.mark, at) : null;
  }

  /** A key, a click, a scroll or pointer movement at `at`. */
  input(at) {
    this.accrue(at);
    this.lastInput = at;
    if (this.visible && this.mark === null) this.mark = at;
  }

  /** The tab became visible or hidden at `at`; hidden time never counts. */
  visibility(visible, at) {
    this.accrue(at);
    this.visible = visible;
    if (!visible) this.mark = null;
  }

  /** Milliseconds counted so far and not yet taken (after accruing up to `at`). */
  pending(at) {
    this.accrue(at);
    return this.accrued;
  }

  /** Whether a periodic batch is due (BATCH_MS of activity counted). */
  due(at) {
    return this.pending(at) >= this.batchMs;
  }

  /**
   * What to send as {minutes, startMs, endMs}, or null. Periodic (`final` false): the
   * whole minutes, the part minute carried over; final (leaving, before a report): the
   * rest rounded to the nearest minute (under 30 s is dropped). The minutes never
   * exceed the period they lie in, as the time_entry rules ask.
   */
  take(at, { final = false } = {}) {
    this.accrue(at);
    const minutes = final ? Math.round(this.accrued / MINUTE) : Math.floor(this.accrued / MINUTE);
    const entry = minutes >= 1 ? { minutes, startMs: this.startMs, endMs: this.endMs } : null;
    if (final) {
      this.accrued = 0;
      this.startMs = this.endMs = null;
    } else if (entry) {
      this.accrued -= minutes * MINUTE;
      this.startMs = this.accrued > 0 ? this.endMs - this.accrued : null;
      if (this.startMs === null) this.endMs = null;
    }
    return entry;
  }
}

// What will be deleted and when: one plain line per case, worded from the `retention`
// field of a case answer (GET /api/cases, /api/cases/{id}, /api/retention/cases).
// The server decides (collab/retention/schedule.py); this module only says it. People
// did not understand periodic deletion prompts, so the line names the date and what
// goes, once, and never asks anything.

import { h } from './dom.js';

/** "2 Jan 2027" in the reader's time zone (or the one given, for tests). */
export function dayText(value, timeZone) {
  const options = { day: 'numeric', month: 'short', year: 'numeric' };
  if (timeZone) options.timeZone = timeZone;
  const when = new Date(value);
  // A date the server sent malformed must not break the whole line.
  if (Number.isNaN(when.getTime())) return 'an unknown day';
  return new Intl.DateTimeFormat('en-GB', options).format(when);
}

function daysText(n) {
  return n === 1 ? '1 day' : `${n} days`;
}

/**
 * The retention line of a case: `{ state, text }`.
 *
 * `state` is what a test or a style reads: `held`, `purged`, `scheduled`, `due`,
 * `kept_closed`, `kept_open_then`, `kept`, or `unknown` (an answer without the field).
 * `now` (ms) tells a date already past from one to come.
 */
export function retentionLine(retention, { now = Date.now(), timeZone } = {}) {
  if (!retention) return { state: 'unknown', text: '' };
  const day = (value) => dayText(value, timeZone);
  const { lifespan_days: days, closed_at: closed, delete_after: after, purged_at: purged } = retention;
  if (retention.legal_hold) {
    return { state: 'held', text: 'On legal hold: nothing will be deleted.' };
  }
  const earlier = purged ? ` Messages and files before ${day(purged)} were deleted after the retention period.` : '';
  if (closed) {
    const since = `Closed ${day(closed)}: `;
    if (purged && Date.parse(purged) >= Date.parse(closed)) {
      return { state: 'purged', text: `${since}messages and files were deleted on ${day(purged)} after the retention period.` };
    }
    if (after && days) {
      const span = `${daysText(days)} after closing`;
      if (Date.parse(after) <= now) {
        return { state: 'due', text: `${since}messages and files will be deleted at the next purge (due ${day(after)}, ${span}).` };
      }
      return { state: 'scheduled', text: `${since}messages and files will be deleted on ${day(after)} (${span}).` };
    }
    return { state: 'kept_closed', text: `${since}messages and files are kept (no retention period is set).${earlier}` };
  }
  if (days) {
    return { state: 'kept_open_then', text: `Kept until the case is closed, then for ${daysText(days)}.${earlier}` };
  }
  return { state: 'kept', text: `Messages and files are kept: no retention period is set.${earlier}` };
}

/** The line as an element for a page (empty text: nothing shown). */
export function retentionNote(retention, options = {}) {
  const { state, text } = retentionLine(retention, options);
  if (!text) return null;
  return h('span', { class: `retention ${state}`, dataset: { retention: state } }, text);
}

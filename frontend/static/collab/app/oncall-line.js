// "On call now" for a specialty: one line under the new-case form's specialty field,
// so the requester knows who is offered the consult first (GET /api/oncall/now).

import { api } from './api.js';
import { fmtDate } from './dom.js';

/** The line's text for an /api/oncall/now answer (pure: tested with node --test). */
export function onCallText(answer) {
  const now = answer?.on_call;
  if (!now || (!now.primary && !now.backup)) {
    return `Nobody is on call for ${answer?.specialty ?? 'this specialty'} now: the consult goes straight to the specialty's queue.`;
  }
  const first = now.primary ?? now.backup;
  const backup = now.primary && now.backup ? `, backup ${now.backup.display_name}` : '';
  return `On call now for ${answer.specialty}: ${first.display_name}${backup}, until ${fmtDate(now.ends_at)}. They are offered the consult first.`;
}

/** Show who is on call for the specialty typed in `input`, in `line`. */
export function wireOnCallLine(input, line) {
  if (!input || !line) return;
  let asked = '';
  const show = async () => {
    const specialty = input.value.trim();
    if (specialty === asked) return;
    asked = specialty;
    if (!specialty) {
      line.hidden = true;
      return;
    }
    try {
      const answer = await api('GET', `/api/oncall/now?specialty=${encodeURIComponent(specialty)}`);
      if (asked !== specialty) return; // a newer question is on its way
      line.textContent = onCallText(answer);
      line.hidden = false;
    } catch {
      line.hidden = true; // the form still works without the line
    }
  };
  input.addEventListener('change', show);
  input.addEventListener('blur', show);
  if (input.value.trim()) show(); // typed before the page finished loading
}

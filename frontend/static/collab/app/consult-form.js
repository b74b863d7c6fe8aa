// The structured consult request of the new-case form (docs/workflow.md §8): read the
// fields into a consult_request body, checked by consult.js before anything is sent.

import { ConsultBodyError, requestBody } from './consult.js';
import { $ } from './dom.js';

const LABELS = {
  'consult.reason': 'The reason', 'consult.question': 'The clinical question', 'consult.history': 'The history',
  'consult.medications': 'The medications', 'consult.tried': 'What has been tried', 'consult.callback.detail': 'The call-back detail',
};

function line(text, limit = 200) {
  const first = text.split(/\r\n|\r|\n/)[0];
  return first.length <= limit ? first : `${first.slice(0, limit - 1)}…`;
}

/** {body} for the form's request, or {error, field} saying what to fix. */
export function readConsultForm(urgency) {
  const value = (id) => $(id)?.value.trim() ?? '';
  const reason = value('#oc-reason');
  const question = value('#oc-question');
  if (!question) return { error: 'Write the clinical question.', field: '#oc-question' };
  try {
    const body = requestBody({
      reason, question, history: value('#oc-history'), medications: value('#oc-medications'), tried: value('#oc-tried'),
      urgency, callbackMethod: $('#oc-callback')?.value ?? 'message', callbackDetail: value('#oc-callback-detail'),
      patientConsent: Boolean($('#oc-consent')?.checked),
      // The timeline's line: the reason, or the question's first line without one.
      text: line(reason || question),
    });
    if (urgency === 'urgent') body.priority = 'urgent';
    return { body };
  } catch (err) {
    if (!(err instanceof ConsultBodyError)) throw err;
    const what = LABELS[err.field] ?? err.field;
    return { error: err.code === 'too_long' ? `${what} is too long.` : `${what}: ${err.message} (${err.code})`, field: null };
  }
}

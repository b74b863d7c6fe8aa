// The escalation page (/escalation/): the organisation's default policy, edited by
// admins (the form is escalation-view.js's PolicyForm). Metadata only: no device key.

import { api } from './api.js';
import { $, say } from './dom.js';
import { describePolicy } from './escalation.js';
import { PolicyForm } from './escalation-view.js';

export async function escalationPage(ctx) {
  const show = (policy) => {
    say($('#esc-org-now'), `Organisation default: ${describePolicy(policy)}`);
    return policy;
  };
  const policy = show(await api('GET', '/api/escalation/policy'));
  if (ctx.role !== 'admin') return;
  const form = new PolicyForm('esc-org', {
    onSave: async (wanted) => show(await api('PUT', '/api/escalation/policy', { json: wanted })),
  });
  $('#esc-org-admin').append(form.el);
  form.fill(policy);
  $('#esc-org-admin').hidden = false;
}

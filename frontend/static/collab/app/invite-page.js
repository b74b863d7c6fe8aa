// Entry module of the patient's invitation pages (collab/templates/invite/):
// keeps the secret of the link's fragment on this browser before the form posts,
// and takes the fragment out of the address bar and history.

import { keepFragmentSecret } from './invite-secret.js';

const saved = keepFragmentSecret(location.hash).then((kept) => {
  if (kept) history.replaceState(null, '', location.pathname + location.search);
  return kept;
}).catch(() => false);

for (const form of document.querySelectorAll('form[data-invite-form]')) {
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    // submit() posts without firing this handler again (the form has no named buttons).
    saved.then(() => HTMLFormElement.prototype.submit.call(form));
  });
}

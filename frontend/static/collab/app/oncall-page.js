// The on-call page: who covers each specialty now; for administrators, adding
// services and shifts and removing shifts (/api/oncall/..., docs/workflow.md "On-call").

import { api } from './api.js';
import { $, errorText, fmtDate, h, replace, say } from './dom.js';

const nameOf = (p) => (p ? p.display_name : '—');

/** A datetime-local value (the browser's local time) as an ISO instant with offset. */
export function localToIso(value) {
  const when = new Date(value);
  if (!value || Number.isNaN(when.getTime())) return '';
  return when.toISOString();
}

async function renderNow() {
  const { services } = await api('GET', '/api/oncall/services');
  replace($('#oncall-rows'), ...services.map((s) => h('tr', { dataset: { service: String(s.id) } },
    h('td', {}, s.name),
    h('td', {}, s.specialty),
    h('td', {}, s.now ? nameOf(s.now.primary) : 'Nobody (consults go straight to the queue)'),
    h('td', {}, s.now ? nameOf(s.now.backup) : '—'),
    h('td', {}, s.now ? fmtDate(s.now.ends_at) : '—'))));
  $('#oncall-table').hidden = services.length === 0;
  say($('#oncall-status'), services.length ? '' : 'No on-call services yet.');
  return services;
}

function option(value, text) {
  return h('option', { value }, text);
}

async function renderService(serviceId) {
  if (!serviceId) {
    replace($('#shift-rows'));
    return;
  }
  const [{ shifts }, { providers }] = await Promise.all([
    api('GET', `/api/oncall/services/${serviceId}/shifts`),
    api('GET', `/api/oncall/services/${serviceId}/providers`),
  ]);
  const people = providers.map((p) => option(p.id, p.display_name));
  replace($('#oncall-primary'), ...people);
  replace($('#oncall-backup'), option('', 'No backup'), ...providers.map((p) => option(p.id, p.display_name)));
  replace($('#shift-rows'), ...shifts.map((s) => {
    const remove = h('button', { type: 'button', class: 'danger', 'aria-label': `Remove the shift of ${nameOf(s.primary)} from ${fmtDate(s.starts_at)}` }, 'Remove');
    remove.addEventListener('click', async () => {
      remove.disabled = true;
      try {
        await api('POST', `/api/oncall/shifts/${s.id}/remove`, { json: {} });
        say($('#oncall-admin-status'), `Shift of ${nameOf(s.primary)} removed.`);
        await refresh(serviceId);
      } catch (err) {
        remove.disabled = false;
        say($('#oncall-admin-status'), errorText(err), 'error');
      }
    });
    return h('tr', { dataset: { shift: String(s.id) } },
      h('td', {}, fmtDate(s.starts_at)), h('td', {}, fmtDate(s.ends_at)),
      h('td', {}, nameOf(s.primary)), h('td', {}, nameOf(s.backup)), h('td', {}, remove));
  }));
}

async function refresh(selected) {
  const services = await renderNow();
  const select = $('#oncall-service');
  if (!select) return;
  replace(select, ...services.map((s) => option(String(s.id), `${s.name} (${s.specialty})`)));
  const keep = services.find((s) => String(s.id) === String(selected)) ?? services[0];
  if (keep) select.value = String(keep.id);
  await renderService(keep ? String(keep.id) : '');
}

function wireAdmin() {
  $('#oncall-admin').hidden = false;
  const status = $('#oncall-admin-status');
  $('#oncall-service').addEventListener('change', (ev) => {
    renderService(ev.currentTarget.value).catch((err) => say(status, errorText(err), 'error'));
  });
  $('#oncall-service-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const made = await api('POST', '/api/oncall/services', {
        json: { specialty: $('#oncall-new-specialty').value.trim(), name: $('#oncall-new-name').value.trim() },
      });
      ev.target.reset();
      say(status, `Service ${made.name} added.`);
      await refresh(made.id);
    } catch (err) {
      say(status, errorText(err), 'error');
    }
  });
  $('#oncall-shift-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const serviceId = $('#oncall-service').value;
    const startsAt = localToIso($('#oncall-start').value);
    const endsAt = localToIso($('#oncall-end').value);
    if (!serviceId || !startsAt || !endsAt) {
      say(status, 'Choose a service, a start and an end.', 'error');
      return;
    }
    try {
      const shift = await api('POST', `/api/oncall/services/${serviceId}/shifts`, {
        json: {
          primary: $('#oncall-primary').value,
          backup: $('#oncall-backup').value || null,
          starts_at: startsAt,
          ends_at: endsAt,
        },
      });
      say(status, `Shift of ${nameOf(shift.primary)} added, ${fmtDate(shift.starts_at)} to ${fmtDate(shift.ends_at)}.`);
      await refresh(serviceId);
    } catch (err) {
      say(status, errorText(err), 'error');
    }
  });
}

export async function oncallPage(ctx) {
  if (ctx.role === 'admin') {
    wireAdmin();
    await refresh('');
  } else {
    await renderNow();
  }
}

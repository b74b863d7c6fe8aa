// Escalation of urgent messages: what the page says about a policy and about one
// message's timer, and the checks of the policy form (the server's bounds and codes,
// docs/workflow.md "Escalation"). Pure: no DOM, tested with node --test.

export const STEP_KINDS = ['oncall', 'backup', 'owner'];
const WHO = { oncall: 'the on-call provider', backup: 'the on-call backup', owner: 'the case owner' };

export class PolicyError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'PolicyError';
    this.code = code;
  }
}

const minutes = (n) => (n === 1 ? '1 minute' : `${n} minutes`);

/** One sentence for a policy, e.g. "A reminder after 2 minutes, then every 2 minutes,
 * 10 in all; then the on-call provider at 10 minutes, the case owner at 30 minutes." */
export function describePolicy(policy) {
  const count = policy.repeat_count;
  let text;
  if (count === 0) text = 'No reminders';
  else if (count === 1) text = `One reminder after ${minutes(policy.first_reminder_minutes)}`;
  else {
    text = `A reminder after ${minutes(policy.first_reminder_minutes)}, then every `
      + `${minutes(policy.repeat_minutes)}, ${count} in all`;
  }
  const steps = policy.steps ?? [];
  if (!steps.length) return `${text}; no escalation.`;
  return `${text}; then ${steps.map((s) => `${WHO[s.to] ?? s.to} at ${minutes(s.after_minutes)}`).join(', ')}.`;
}

/** "oncall:10, backup:20" for the form's text field. */
export function stepsText(steps) {
  return (steps ?? []).map((s) => `${s.to}:${s.after_minutes}`).join(', ');
}

function whole(value, low, high, code, what) {
  const text = String(value ?? '').trim();
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(n) || n < low || n > high) {
    throw new PolicyError(code, `${what} must be a whole number from ${low} to ${high}.`);
  }
  return n;
}

/** The policy the form describes, checked as the server checks it (same codes). */
export function parsePolicy({ first, every, count, steps }) {
  const policy = {
    first_reminder_minutes: whole(first, 1, 1440, 'bad_first_reminder', 'Minutes before the first reminder'),
    repeat_minutes: whole(every, 1, 1440, 'bad_interval', 'Minutes between reminders'),
    repeat_count: whole(count, 0, 50, 'bad_count', 'The number of reminders'),
    steps: [],
  };
  const parts = String(steps ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  if (parts.length > 5) throw new PolicyError('bad_steps', 'At most 5 escalation steps.');
  for (const part of parts) {
    const [to, after, extra] = part.split(':').map((s) => s.trim());
    if (extra !== undefined || after === undefined) {
      throw new PolicyError('bad_steps', `Write each step as who:minutes, e.g. oncall:10 (not "${part}").`);
    }
    if (!STEP_KINDS.includes(to)) {
      throw new PolicyError('bad_step_kind', `A step goes to ${STEP_KINDS.join(', ')} (not "${to}").`);
    }
    const n = whole(after, 1, 10080, 'bad_step_time', 'A step\'s minutes');
    const previous = policy.steps[policy.steps.length - 1];
    if (previous && n <= previous.after_minutes) {
      throw new PolicyError('bad_step_time', 'Each step must come later than the one before.');
    }
    policy.steps.push({ to, after_minutes: n });
  }
  return policy;
}

const USER_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Whether a value from the server is shaped like a user id (worth a directory look-up). */
export function isUserId(value) {
  return typeof value === 'string' && USER_ID.test(value);
}

// Said of an escalation target who is not in the verified roster: they cannot read the
// case, and the way in is the normal admission with its identity checks, never a
// blind add of an account the server named.
const OUTSIDE = ' (not a member: they cannot read this case until they ask to join and a member '
  + 'admits them under "Waiting to join", after checking who they are)';
const OUTSIDE_ME = ' (you are not a member: you cannot read this case until you ask to join and a '
  + 'member admits you, after checking who you are)';

/**
 * What a message shows about its timer: escalation lines for everyone, and for a
 * recipient who still owes an acknowledgement, the last reminder.
 * state: {steps: [{to: {id, name} | null, via, at, outcome}], reminder: {n, at, pending} | null}
 *
 * The server's word on a step is only a reminder that it happened: whether the target
 * can read the case comes from `inRoster(userId)` (the verified roster this client
 * holds), never from the frame's `member` flag, and the name from `nameOf(userId)` (the
 * directory as this client looks it up; null: an unknown person), never from `to.name`.
 * Without them every target is an unknown person outside the case (fails closed). A
 * target without an id (the server names no one outside the case) is an unknown person.
 */
export function escalationLines(state, { me, acknowledged, fmt, inRoster = () => false, nameOf = () => null }) {
  const lines = [];
  for (const step of state?.steps ?? []) {
    if (step.outcome === 'no_target' || !step.to) continue;
    const id = typeof step.to.id === 'string' ? step.to.id : null;
    const mine = id !== null && id === me;
    const member = id !== null && Boolean(inRoster(id));
    // An unknown person keeps the step's kind from this client's own words (WHO), if any.
    const unknown = Object.hasOwn(WHO, step.via) ? `an unknown person (as ${WHO[step.via]})` : 'an unknown person';
    const name = mine ? 'you' : (id !== null && nameOf(id)) || unknown;
    let line = `Escalated to ${name} at ${fmt(step.at)}`;
    if (!member) line += mine ? OUTSIDE_ME : OUTSIDE;
    lines.push(line);
  }
  const reminder = state?.reminder;
  if (reminder && !acknowledged && (reminder.pending ?? []).includes(me)) {
    lines.push(`Reminder ${reminder.n} at ${fmt(reminder.at)}: please acknowledge this urgent message`);
  }
  return lines;
}

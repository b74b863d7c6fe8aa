// sendMessage (app/messaging.js) after a `sender_seq_not_increasing` refusal: this
// device's sender_seq is raised to the server's structured `last_sender_seq` and the
// message sealed again; a refusal without that field (only the prose) is thrown as
// SendRefused, never guessed from the message text.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { SendRefused, sendMessage } from '../static/collab/app/messaging.js';

/** A session that seals envelopes with increasing sender_seqs and records its calls. */
function fakeSession(start = 3) {
  const calls = [];
  let seq = start;
  return {
    calls,
    get senderSeq() { return seq; },
    async seal(body, contentType, attachments) {
      seq += 1;
      const header = { senderSeq: seq, clientMsgId: 'cmid' };
      calls.push(['seal', seq]);
      return { header, toWire: () => ({ sender_seq: seq, body, contentType, attachments }) };
    },
    async unseal(envelope) { calls.push(['unseal', envelope.header.senderSeq]); seq = envelope.header.senderSeq - 1; },
    async sync() { calls.push(['sync']); },
    async bumpSenderSeq(atLeast) { calls.push(['bump', atLeast]); seq = Math.max(seq, atLeast); },
  };
}

/** A socket that answers each request with the next scripted frame. */
function fakeSocket(...answers) {
  const sent = [];
  return {
    sent,
    async request(frame) {
      sent.push(frame);
      if (!answers.length) throw new Error('no more scripted answers');
      return answers.shift();
    },
  };
}

test('sender_seq_not_increasing with last_sender_seq: bumped to it, sealed again, acknowledged', async () => {
  const session = fakeSession(3);
  const ack = { type: 'ack', seq: 7, epoch: 0 };
  const socket = fakeSocket(
    { type: 'error', code: 'sender_seq_not_increasing', message: 'sender_seq must exceed 41.', last_sender_seq: 41 },
    ack,
  );
  const { ack: got, envelope } = await sendMessage(socket, session, { text: 'hi' });
  assert.equal(got, ack);
  assert.deepEqual(session.calls.filter((c) => c[0] === 'bump'), [['bump', 41]]);
  assert.deepEqual(session.calls, [['seal', 4], ['unseal', 4], ['bump', 41], ['seal', 42]]);
  // The retry carries a sender_seq above the server's last one.
  assert.equal(socket.sent.length, 2);
  assert.equal(socket.sent[1].envelope.sender_seq, 42);
  assert.equal(envelope.header.senderSeq, 42);
});

test('the field is used even when the prose names another number', async () => {
  const session = fakeSession(0);
  const socket = fakeSocket(
    { type: 'error', code: 'sender_seq_not_increasing', message: 'sender_seq must exceed 9.', last_sender_seq: 41 },
    { type: 'ack', seq: 1, epoch: 0 },
  );
  await sendMessage(socket, session, { text: 'hi' });
  assert.deepEqual(session.calls.filter((c) => c[0] === 'bump'), [['bump', 41]]);
});

for (const [name, frame] of [
  ['missing (only the prose names a number)', { message: 'sender_seq must exceed 41.' }],
  ['a string', { message: 'sender_seq must exceed 41.', last_sender_seq: '41' }],
  ['not an integer', { last_sender_seq: 41.5 }],
  ['beyond a safe integer', { last_sender_seq: 2 ** 60 }],
  ['null', { last_sender_seq: null }],
]) {
  test(`sender_seq_not_increasing with last_sender_seq ${name}: SendRefused, no guess`, async () => {
    const session = fakeSession(3);
    const socket = fakeSocket(
      { type: 'error', code: 'sender_seq_not_increasing', ...frame },
      { type: 'ack', seq: 7, epoch: 0 },
    );
    await assert.rejects(sendMessage(socket, session, { text: 'hi' }), (err) => {
      assert.ok(err instanceof SendRefused);
      assert.equal(err.code, 'sender_seq_not_increasing');
      return true;
    });
    assert.equal(socket.sent.length, 1); // not sent again
    assert.deepEqual(session.calls.filter((c) => c[0] === 'bump'), []);
    assert.deepEqual(session.calls, [['seal', 4], ['unseal', 4]]);
  });
}

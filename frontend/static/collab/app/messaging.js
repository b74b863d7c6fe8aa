// Sending one message over the socket, with the retries the protocol allows:
// the log moved (re-sync and seal in the new epoch), or this device's
// sender_seq is behind what the server stored (another tab sent more).

import { CryptoError } from '../cr1/index.js';

export class SendRefused extends Error {
  constructor(frame) {
    super(frame.message || frame.code);
    this.name = 'SendRefused';
    this.code = frame.code;
  }
}

/** `urgent` also flags the message to the server (metadata), which then tracks
 * acknowledgements; the encrypted body carries priority "urgent" for display. */
export async function sendMessage(socket, session, body, contentType = 'text', attachments = [], { urgent = false } = {}) {
  for (let attempt = 0; attempt < 4; attempt++) {
    const envelope = await session.seal(body, contentType, attachments);
    let answer;
    try {
      answer = await socket.request({ type: 'send', envelope: envelope.toWire(), ...(urgent ? { urgent: true } : {}) });
    } catch (err) {
      // Unknown whether it was stored: keep the seq used (a retry must not reuse it
      // with other content); the caller may resend, which seals afresh.
      throw err;
    }
    if (answer.type === 'ack') return { ack: answer, envelope };
    await session.unseal(envelope);
    if (answer.code === 'wrong_epoch' || answer.code === 'stale_head') {
      await session.sync();
      continue;
    }
    if (answer.code === 'sender_seq_not_increasing' && Number.isSafeInteger(answer.last_sender_seq)) {
      // The structured field, never the message text.
      await session.bumpSenderSeq(answer.last_sender_seq);
      continue;
    }
    throw new SendRefused(answer);
  }
  throw new CryptoError('wrong_epoch', 'the case kept changing; try again');
}

/** Wait for the socket's `hello` (the caller's onFrame passes frames in). */
export function helloWaiter() {
  let resolve;
  const promise = new Promise((r) => { resolve = r; });
  return { promise, resolve };
}

// The single exception type of CR1, carrying a stable code. Mirrors
// collab/crypto/errors.py: same code strings, never renamed.

export const CODES = Object.freeze(new Set([
  'bad_action', 'bad_base64', 'bad_body', 'bad_certificate', 'bad_field',
  'bad_hash', 'bad_key', 'bad_length', 'bad_proof', 'bad_roster', 'bad_signature',
  'bad_wrap', 'chunk_order', 'decrypt_failed', 'extended', 'fork',
  'inner_mismatch', 'key_commit_mismatch', 'low_order_key',
  'non_canonical_signature', 'own_identity_mismatch', 'recall_mismatch', 'replay', 'rollback',
  'roster_mismatch', 'stale_head',
  'too_large', 'truncated', 'unauthorized_author', 'unsupported_version',
  'wraps_mismatch', 'wrong_case', 'wrong_epoch',
]));

/** Any rejection by CR1; `code` is one of CODES. */
export class CryptoError extends Error {
  constructor(code, message = '') {
    if (!CODES.has(code)) {
      // A programming error, not an input error.
      throw new TypeError(`unknown CryptoError code ${JSON.stringify(code)}`);
    }
    super(message ? `${code}: ${message}` : code);
    this.name = 'CryptoError';
    this.code = code;
    this.detail = message;
  }
}

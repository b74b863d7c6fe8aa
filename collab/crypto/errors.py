"""The single exception type of collab.crypto, carrying a stable code."""

from __future__ import annotations

# Stable codes: the server maps them to error frames, clients to UI messages.
# Never rename one; add new codes instead.
CODES: frozenset[str] = frozenset(
    {
        "bad_action",
        "bad_base64",
        "bad_body",
        "bad_certificate",
        "bad_field",
        "bad_hash",
        "bad_key",
        "bad_length",
        "bad_proof",
        "bad_roster",
        "bad_signature",
        "bad_wrap",
        "chunk_order",
        "decrypt_failed",
        "extended",
        "fork",
        "inner_mismatch",
        "key_commit_mismatch",
        "low_order_key",
        "non_canonical_signature",
        "recall_mismatch",
        "own_identity_mismatch",
        "replay",
        "rollback",
        "roster_mismatch",
        "stale_head",
        "too_large",
        "truncated",
        "unauthorized_author",
        "unsupported_version",
        "wraps_mismatch",
        "wrong_case",
        "wrong_epoch",
    }
)


class CryptoError(Exception):
    """Any rejection by collab.crypto; `code` is one of CODES."""

    def __init__(self, code: str, message: str = "") -> None:
        if code not in CODES:  # programming error, not an input error
            raise ValueError(f"unknown CryptoError code {code!r}")
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message

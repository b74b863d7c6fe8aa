"""Client-side errors. Each maps to one CLI exit code; CryptoError (from collab.crypto)
is the verification failure and keeps its stable code."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

EXIT_OK = 0
EXIT_USAGE = 1  # bad arguments or input (missing file, not an image, no keystore)
EXIT_AUTH = 2  # sign-in refused, session ended, wrong passphrase or recovery key
EXIT_REFUSED = 3  # the server refused the request
EXIT_VERIFY = 4  # a signature, hash, log or decryption check failed (CryptoError)
EXIT_UNREACHABLE = 5  # the server could not be reached


class ClientError(Exception):
    """Base of the client's own errors; ``exit_code`` is what the CLI exits with."""

    exit_code = EXIT_USAGE
    # Set on an error a send raised while its message still waits in the outbox: the
    # message's id, to send that one with ``send_text(..., retry=id)`` (collab.client.sdk).
    pending_id: str | None = None

    def __init__(self, message: str, *, code: str = "client_error") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class UsageError(ClientError):
    exit_code = EXIT_USAGE


class ImageError(UsageError):
    """The file is not an acceptable image (not an image, unsupported, too large, a bomb)."""

    def __init__(self, message: str, *, code: str = "bad_image") -> None:
        super().__init__(message, code=code)


class KeystoreError(ClientError):
    exit_code = EXIT_USAGE


class AuthError(ClientError):
    exit_code = EXIT_AUTH

    def __init__(self, message: str, *, code: str = "unauthenticated") -> None:
        super().__init__(message, code=code)


class ServerRefusedError(ClientError):
    """The server answered with an error (HTTP status or a socket error frame/close code)."""

    exit_code = EXIT_REFUSED

    def __init__(
        self, message: str, *, code: str, status: int | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.body = body or {}


class UnreachableError(ClientError):
    exit_code = EXIT_UNREACHABLE

    def __init__(self, message: str) -> None:
        super().__init__(message, code="unreachable")


@dataclass(frozen=True)
class IdentityChange:
    """A user's identity key differs from the one this client pinned for them."""

    user: uuid.UUID
    old_uik: bytes
    new_uik: bytes
    old_safety: tuple[str, ...]  # 12 groups of 5 digits with the pinned key
    new_safety: tuple[str, ...]  # ... and with the key now seen
    cases: tuple[uuid.UUID, ...]  # where the new key was seen
    was_verified: bool


class IdentityChangedError(ClientError):
    """Client policy refusal: an identity key changed and nobody has accepted it yet.
    Nothing was signed or sent; ``changes`` says who, with both safety numbers."""

    exit_code = EXIT_VERIFY

    def __init__(self, changes: Sequence[IdentityChange], message: str | None = None) -> None:
        self.changes = tuple(changes)
        # Display names for the message (set by the CLI; the user id otherwise).
        self.names: Callable[[uuid.UUID], str] | None = None
        who = ", ".join(str(c.user) for c in self.changes)
        self.detail = message  # why, beyond the changes themselves (or None)
        super().__init__(message or f"identity key changed for {who}", code="identity_changed")


class AdmissionRefusedError(ClientError):
    """Client policy refusal of a join request (``blockers``: patient_unbound, ...)."""

    exit_code = EXIT_VERIFY

    def __init__(self, message: str, *, blockers: Sequence[str]) -> None:
        super().__init__(message, code=blockers[0] if blockers else "admission_refused")
        self.blockers = tuple(blockers)

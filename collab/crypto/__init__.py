"""CR1 cryptographic core (pure Python over PyNaCl; no Django).

Server-side (no keys needed):
    verify_device_cert(cert, uik_pub)          register a device
    LogEntry.from_wire(d) / LogEntry.decode(b) parse an entry
    verify_entry(head_or_None, entry)          accept a membership-log entry
    Envelope.from_wire(d); check_sender(env, head_entry) -> dsk_pub;
    verify_envelope(env, dsk_pub)              accept a message
    RootHasher().update(...); .verify(root, ct_size)   accept a blob upload
Client-side additionally:
    make_device_cert, build_entry, open_wrap, make_history_body, open_history,
    verify_chain, check_fork, seal_message, open_envelope, ReplayGuard,
    AttachmentEncryptor, AttachmentDecryptor, decrypt_stream, safety_number.
Every rejection raises CryptoError with a stable `.code` (errors.CODES).
Byte layouts: docs/protocol-crypto.md. Test vectors: collab/crypto/vectors/.
"""

from .actions import (
    Action,
    AddDeviceBody,
    AddUserBody,
    Body,
    CreateBody,
    EnrolDeviceBody,
    LeaveRequest,
    RemoveDeviceBody,
    RemoveUserBody,
    RotateBody,
    SetRoleBody,
    ShareHistoryBody,
    enrol_bytes,
    parse_body,
    sign_enrol,
    sign_leave,
)
from .attachment import (
    AttachmentDecryptor,
    AttachmentEncryptor,
    BlobDigest,
    Manifest,
    RootHasher,
    chunk_count,
    ciphertext_size,
    decrypt_stream,
)
from .devcert import DeviceCert, make_device_cert, verify_device_cert
from .envelope import (
    AttachmentRef,
    Envelope,
    Gap,
    Header,
    ReplayGuard,
    check_sender,
    encode_body,
    open_envelope,
    seal_message,
    verify_envelope,
)
from .errors import CODES, CryptoError
from .log import (
    LogEntry,
    Wrap,
    build_entry,
    check_fork,
    key_commit,
    make_history_body,
    open_history,
    open_wrap,
    seal_entry,
    verify_chain,
    verify_entry,
)
from .primitives import (
    box_open,
    box_seal,
    check_ed25519_public,
    check_x25519_public,
    ed25519_public,
    random_bytes,
    secretbox_open,
    secretbox_seal,
    sha512,
    sign,
    verify,
    x25519_public,
)
from .roster import Role, Roster, RosterUser
from .safety import safety_number
from .wire import b64d, b64e

__all__ = [
    "CODES",
    "Action",
    "AddDeviceBody",
    "AddUserBody",
    "AttachmentDecryptor",
    "AttachmentEncryptor",
    "AttachmentRef",
    "BlobDigest",
    "Body",
    "CreateBody",
    "CryptoError",
    "DeviceCert",
    "EnrolDeviceBody",
    "Envelope",
    "Gap",
    "Header",
    "LeaveRequest",
    "LogEntry",
    "Manifest",
    "RemoveDeviceBody",
    "RemoveUserBody",
    "ReplayGuard",
    "Role",
    "RootHasher",
    "Roster",
    "RosterUser",
    "RotateBody",
    "SetRoleBody",
    "ShareHistoryBody",
    "Wrap",
    "b64d",
    "b64e",
    "box_open",
    "box_seal",
    "build_entry",
    "check_ed25519_public",
    "check_fork",
    "check_sender",
    "check_x25519_public",
    "chunk_count",
    "ciphertext_size",
    "decrypt_stream",
    "ed25519_public",
    "encode_body",
    "enrol_bytes",
    "key_commit",
    "make_device_cert",
    "make_history_body",
    "open_envelope",
    "open_history",
    "open_wrap",
    "parse_body",
    "random_bytes",
    "safety_number",
    "seal_entry",
    "seal_message",
    "secretbox_open",
    "secretbox_seal",
    "sha512",
    "sign",
    "sign_enrol",
    "sign_leave",
    "verify",
    "verify_chain",
    "verify_device_cert",
    "verify_entry",
    "verify_envelope",
    "x25519_public",
]

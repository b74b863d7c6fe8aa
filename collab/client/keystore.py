"""The local keystore: one JSON file, sealed under a passphrase.

    file = {"format": "collab-keystore", "version": 1, "kdf": "argon2id",
            "opslimit": n, "memlimit": n, "salt": b64(16), "nonce": b64(24),
            "ciphertext": b64(secretbox(JSON state, nonce, argon2id(passphrase, salt)))}

The state holds the identity seed (UIK), this device's keys and certificate, the
session cookie, per case what this client has verified (the trusted log head) and
its last sender_seq and the highest epoch whose key it put in the user's key backup,
and the pinned identity keys of other users (collab.client.pins)
with the highest pin-book version seen on the server. The file is written atomically
with mode 0600 and refused when group or others may read it.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils

from collab.client.errors import AuthError, KeystoreError
from collab.client.keys import DeviceKeys, Identity
from collab.client.pins import PinBook
from collab.crypto.devcert import DeviceCert
from collab.crypto.errors import CryptoError
from collab.crypto.wire import b64d, b64e

FORMAT = "collab-keystore"
VERSION = 1
KDF = nacl.pwhash.argon2id
DEFAULT_OPSLIMIT = KDF.OPSLIMIT_INTERACTIVE
DEFAULT_MEMLIMIT = KDF.MEMLIMIT_INTERACTIVE
MIN_PASSPHRASE = 8


@dataclass
class CaseMemo:
    """What this client has verified of one case, kept between runs."""

    head_epoch: int = -1
    head_hash: bytes = b""
    sender_seq: int = 0
    last_seq: int = 0
    # The highest epoch whose key this device uploaded to the key backup (-1: none).
    backup_epoch: int = -1

    def to_json(self) -> dict[str, Any]:
        return {"head_epoch": self.head_epoch, "head_hash": b64e(self.head_hash),
                "sender_seq": self.sender_seq, "last_seq": self.last_seq,
                "backup_epoch": self.backup_epoch}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CaseMemo:
        return cls(int(d["head_epoch"]), b64d(d["head_hash"]), int(d["sender_seq"]),
                   int(d.get("last_seq", 0)), int(d.get("backup_epoch", -1)))


@dataclass
class KeystoreState:
    server: str = ""
    username: str = ""
    user_id: uuid.UUID | None = None
    session: str | None = None
    session_cookie: str = "sessionid"
    identity: Identity | None = None
    device: DeviceKeys | None = None
    cert: DeviceCert | None = None
    device_name: str = ""
    cases: dict[str, CaseMemo] = field(default_factory=dict)
    # Identity keys this user has pinned or verified (synced, sealed, to their other
    # devices) and the highest pin-book version seen on the server (rollback check).
    pins: PinBook = field(default_factory=PinBook)
    pins_version: int = 0
    # Messages sealed but not yet acknowledged by the server, oldest first (the SDK's
    # outbox, collab.client.sdk): retried with the same envelope until acked.
    outbox: list[dict[str, Any]] = field(default_factory=list)
    # What became of the latest messages that left the outbox (acked or refused), so an
    # explicit retry of one (``retry=id``) answers the same after a restart.
    sent: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "username": self.username,
            "user_id": str(self.user_id) if self.user_id else None,
            "session": self.session,
            "session_cookie": self.session_cookie,
            "uik_seed": b64e(self.identity.uik_seed) if self.identity else None,
            "device": None if self.device is None or self.cert is None else {
                "device_id": str(self.device.device_id),
                "dsk_seed": b64e(self.device.dsk_seed),
                "dxk_secret": b64e(self.device.dxk_secret),
                "cert": self.cert.to_wire(),
                "name": self.device_name,
            },
            "cases": {k: v.to_json() for k, v in self.cases.items()},
            "pins": self.pins.to_json(),
            "pins_version": self.pins_version,
            "outbox": self.outbox,
            "sent": self.sent,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> KeystoreState:
        user_id = uuid.UUID(d["user_id"]) if d.get("user_id") else None
        state = cls(
            server=str(d.get("server", "")), username=str(d.get("username", "")),
            user_id=user_id, session=d.get("session"),
            session_cookie=str(d.get("session_cookie", "sessionid")),
        )
        if d.get("uik_seed") and user_id is not None:
            state.identity = Identity(user_id, b64d(d["uik_seed"], 32))
        dev = d.get("device")
        if dev and user_id is not None:
            state.device = DeviceKeys(user_id, uuid.UUID(dev["device_id"]),
                                      b64d(dev["dsk_seed"], 32), b64d(dev["dxk_secret"], 32))
            state.cert = DeviceCert.from_wire(dev["cert"])
            state.device_name = str(dev.get("name", ""))
        state.cases = {k: CaseMemo.from_json(v) for k, v in (d.get("cases") or {}).items()}
        # Keystores written before pinning have neither field: an empty book, version 0.
        state.pins = PinBook.from_json(d.get("pins") or {})
        state.pins_version = int(d.get("pins_version") or 0)
        state.outbox = [x for x in d.get("outbox") or [] if isinstance(x, dict)]
        state.sent = [x for x in d.get("sent") or [] if isinstance(x, dict)]
        return state


def _derive(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return KDF.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase.encode("utf-8"), salt,
                   opslimit=opslimit, memlimit=memlimit)


class Keystore:
    """A keystore file; ``state`` is its decrypted content while open."""

    def __init__(self, path: Path, passphrase: str, state: KeystoreState,
                 opslimit: int = DEFAULT_OPSLIMIT, memlimit: int = DEFAULT_MEMLIMIT,
                 salt: bytes | None = None, key: bytes | None = None) -> None:
        self.path = path
        self.state = state
        self.opslimit = opslimit
        self.memlimit = memlimit
        # The key is derived once per open; every save uses a fresh nonce.
        self._salt = salt if salt is not None else nacl.utils.random(KDF.SALTBYTES)
        self._key = key if key is not None else _derive(passphrase, self._salt, opslimit, memlimit)

    @classmethod
    def create(cls, path: Path, passphrase: str, *, opslimit: int = DEFAULT_OPSLIMIT,
               memlimit: int = DEFAULT_MEMLIMIT) -> Keystore:
        if len(passphrase) < MIN_PASSPHRASE:
            raise KeystoreError(f"the passphrase must have at least {MIN_PASSPHRASE} characters",
                                code="weak_passphrase")
        if path.exists():
            raise KeystoreError(f"a keystore already exists at {path}", code="keystore_exists")
        store = cls(path, passphrase, KeystoreState(), opslimit, memlimit)
        store.save()
        return store

    @classmethod
    def load(cls, path: Path, passphrase: str) -> Keystore:
        try:
            info = path.stat()
        except FileNotFoundError:
            raise KeystoreError(
                f"no keystore at {path} (run `collab-client login` first)", code="no_keystore"
            ) from None
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeystoreError(
                f"keystore {path} is accessible to other users; run `chmod 600 {path}`",
                code="keystore_permissions",
            )
        try:
            outer = json.loads(path.read_text())
            if outer.get("format") != FORMAT or outer.get("version") != VERSION:
                raise ValueError("unknown keystore format")
            opslimit, memlimit = int(outer["opslimit"]), int(outer["memlimit"])
            salt, nonce = b64d(outer["salt"], KDF.SALTBYTES), b64d(outer["nonce"], 24)
            ciphertext = b64d(outer["ciphertext"])
        except (ValueError, KeyError, TypeError, CryptoError) as exc:
            raise KeystoreError(f"keystore {path} is damaged: {exc}",
                                code="keystore_damaged") from None
        key = _derive(passphrase, salt, opslimit, memlimit)
        try:
            plain = nacl.secret.SecretBox(key).decrypt(ciphertext, nonce)
        except nacl.exceptions.CryptoError:
            raise AuthError("wrong passphrase for the keystore", code="wrong_passphrase") from None
        state = KeystoreState.from_json(json.loads(plain))
        return cls(path, passphrase, state, opslimit, memlimit, salt=salt, key=key)

    def save(self) -> None:
        salt, key = self._salt, self._key
        nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
        plain = json.dumps(self.state.to_json(), sort_keys=True).encode()
        ciphertext = nacl.secret.SecretBox(key).encrypt(plain, nonce).ciphertext
        outer = {
            "format": FORMAT, "version": VERSION, "kdf": "argon2id",
            "opslimit": self.opslimit, "memlimit": self.memlimit,
            "salt": b64e(salt), "nonce": b64e(nonce), "ciphertext": b64e(ciphertext),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(outer, out)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise

"""The case-room socket: ws(s)://host/ws/cases/<case>/?device=<device>&proof=1.

The device proves itself first: the server's first frame is ``challenge {nonce}`` and
the answer ``prove {sig}``, an Ed25519 signature by the device's DSK over the challenge,
the case and the device (collab.crypto.devproof); only then does ``hello`` come.

One reader: frames that are not the answer being waited for are buffered and handed
out by ``next_event``. Close codes become client errors (4401 auth, 4403/4404 refused);
an abnormal close, 4503 ``unavailable`` (the server cannot check the session now) and
4507 ``too_slow`` (this connection fell too far behind) are ``ConnectionLostError``, and
so is an answer that never comes: the caller reconnects (``reopen``) and resumes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import uuid
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from collab.client.errors import AuthError, ClientError, ServerRefusedError, UnreachableError
from collab.crypto.devproof import CHALLENGE_LEN, sign_ws_proof
from collab.crypto.envelope import Envelope
from collab.crypto.errors import CryptoError
from collab.crypto.wire import b64d, b64e

MAX_FRAME = 32 * 1024 * 1024  # history pages can be large; the server limits what we send
_REFUSED = {4403: "not_member", 4404: "no_case", 4400: "bad_request", 4413: "frame_too_large",
            4429: "rate_limited"}
# Close codes after which reconnecting and resuming from the last seq is the answer.
_LOST = {4503: "unavailable", 4507: "too_slow"}
# HTTP statuses of a refused handshake that say "not now" rather than "not you".
TRANSIENT_STATUS = frozenset({500, 502, 503, 504})


class ConnectionLostError(ClientError):
    """The socket dropped, the server closed it with 4503/4507, or an answer did not come
    in time: reconnect and resume. ``close_code`` is the close code (None if none)."""

    exit_code = UnreachableError("").exit_code

    def __init__(self, message: str, *, code: str = "connection_lost",
                 close_code: int | None = None) -> None:
        super().__init__(message, code=code)
        self.close_code = close_code


def is_transient(error: BaseException) -> bool:
    """Whether trying again later can help: a dropped or timed-out connection, 4503/4507,
    an unreachable server, an answer (socket handshake or HTTP) 500/502/503/504, or rate
    limiting. Never for 4401 (session ended), 4403/4404 (not a member, no case, device
    revoked) or any other refusal."""
    if isinstance(error, (ConnectionLostError, UnreachableError)):
        return True
    if isinstance(error, ServerRefusedError):
        return error.status in TRANSIENT_STATUS or error.status in (429, 4429) \
            or error.code in ("rate_limited", "unavailable")
    return False


def socket_url(base_url: str, case_id: uuid.UUID, device_id: uuid.UUID) -> str:
    scheme = "wss://" if base_url.startswith("https://") else "ws://"
    host = base_url.split("://", 1)[1].rstrip("/")
    # proof=1: this client always proves its device (also while the server does not
    # yet require it).
    return f"{scheme}{host}/ws/cases/{case_id}/?device={device_id}&proof=1"


class Room:
    def __init__(self, ws: ClientConnection, case_id: uuid.UUID) -> None:
        self.ws = ws
        self.case_id = case_id
        self.hello: dict[str, Any] = {}
        self._buffer: collections.deque[dict[str, Any]] = collections.deque()
        self._last_error: dict[str, Any] | None = None
        # How to open this room again (set by connect): keyword arguments of connect.
        self._params: dict[str, Any] = {}
        self.reopened = 0

    @classmethod
    async def connect(
        cls, *, base_url: str, origin: str, cookie: str, case_id: uuid.UUID,
        device_id: uuid.UUID, device_key: bytes, timeout: float = 20,
    ) -> Room:
        """Open the socket, answer the server's challenge with this device's proof
        (``device_key`` is its DSK seed), then wait for ``hello``."""
        url = socket_url(base_url, case_id, device_id)
        try:
            ws = await websockets.connect(
                url, additional_headers={"Origin": origin, "Cookie": cookie},
                open_timeout=timeout, max_size=MAX_FRAME, compression=None,
            )
        except InvalidStatus as refused:
            status = refused.response.status_code
            if status in (401, 403):
                raise AuthError(f"the server refused the socket (HTTP {status})",
                                code="socket_refused") from None
            raise ServerRefusedError(f"the server refused the socket (HTTP {status})",
                                code="socket_refused", status=status) from None
        except (OSError, InvalidHandshake, TimeoutError) as failure:
            raise UnreachableError(f"cannot open the case socket at {url}: {failure}") from None
        room = cls(ws, case_id)
        room._params = {"base_url": base_url, "origin": origin, "cookie": cookie,
                        "case_id": case_id, "device_id": device_id, "device_key": device_key,
                        "timeout": timeout}
        try:
            await room._greet(timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                await ws.close()
            raise
        return room

    async def _greet(self, timeout: float) -> None:
        """The challenge, this device's proof, then hello; no greeting in time is a lost
        connection (a server that cannot check the session now answers late or 4503)."""
        try:
            first = await self._recv(timeout)
            if first.get("type") == "challenge":
                try:
                    challenge = b64d(first.get("nonce"), CHALLENGE_LEN)
                except CryptoError:
                    raise ServerRefusedError("the server sent a malformed challenge",
                                             code="bad_challenge") from None
                sig = sign_ws_proof(self._params["device_key"], challenge, self.case_id,
                                    self._params["device_id"])
                await self._send({"type": "prove", "sig": b64e(sig)})
                first = await self._recv(timeout)
        except TimeoutError:
            raise ConnectionLostError("the server did not greet the socket in time",
                                      code="no_hello") from None
        if first.get("type") != "hello":
            self._buffer.append(first)
            with contextlib.suppress(TimeoutError):
                await self._recv(timeout)  # the close that follows a refusal raises
            raise ServerRefusedError("the server did not greet the socket", code="no_hello")
        self.hello = first

    async def reopen(self) -> None:
        """Open the same room again on a fresh connection (after ConnectionLostError):
        a new challenge, proof and hello; frames buffered from the old one are dropped."""
        with contextlib.suppress(Exception):
            await self.ws.close()
        fresh = await Room.connect(**self._params)
        self.ws, self.hello = fresh.ws, fresh.hello
        self._buffer, self._last_error = fresh._buffer, None
        self.reopened += 1

    def _closed(self, closed: ConnectionClosed) -> ClientError:
        code = closed.rcvd.code if closed.rcvd is not None else None
        reason = self._last_error or {}
        detail = str(reason.get("message") or "")
        if code == 4401:
            return AuthError(f"the session ended: {detail or 'sign in again'}",
                             code=str(reason.get("code") or "session_ended"))
        if code in _REFUSED:
            name = str(reason.get("code") or _REFUSED[code])
            return ServerRefusedError(detail or name.replace("_", " "), code=name, status=code)
        if code in _LOST:
            return ConnectionLostError(
                f"the server closed the case socket ({_LOST[code]}); resume", code=_LOST[code],
                close_code=code)
        return ConnectionLostError(f"the case socket dropped (close code {code})",
                                   close_code=code)

    async def _recv(self, timeout: float | None = None) -> dict[str, Any]:
        while True:
            try:
                raw = await asyncio.wait_for(self.ws.recv(), timeout)
            except ConnectionClosed as closed:
                raise self._closed(closed) from None
            try:
                frame = json.loads(raw)
            except ValueError:
                continue  # not JSON: nothing the protocol sends
            if not isinstance(frame, dict):
                continue
            if frame.get("type") == "error" and not frame.get("ref"):
                self._last_error = frame  # explains the close that usually follows
            return frame

    async def _send(self, frame: dict[str, Any]) -> None:
        try:
            await self.ws.send(json.dumps(frame, separators=(",", ":")))
        except ConnectionClosed as closed:
            raise self._closed(closed) from None

    async def _answer(self, ref: str, kinds: tuple[str, ...], timeout: float) -> dict[str, Any]:
        """The answer to ``ref``; none in time means the connection is no good: it is cut
        and ``ConnectionLostError`` raised, so the caller reconnects and asks again."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    frame = await self._recv()
                    if frame.get("ref") == ref and frame.get("type") == "error":
                        code = str(frame.get("code"))
                        raise ServerRefusedError(str(frame.get("message") or code), code=code,
                                                 body=frame)
                    if frame.get("ref") == ref and frame.get("type") in kinds:
                        return frame
                    self._buffer.append(frame)
        except TimeoutError:
            self.drop()
            raise ConnectionLostError(f"no answer from the server within {timeout:g} s",
                                      code="timeout") from None

    async def send_envelope(self, envelope: Envelope, timeout: float = 30) -> dict[str, Any]:
        """Send and wait for the ack (the message is committed when it comes)."""
        ref = uuid.uuid4().hex
        await self._send({"type": "send", "ref": ref, "envelope": envelope.to_wire()})
        return await self._answer(ref, ("ack",), timeout)

    async def resume(self, after: int, limit: int = 50, timeout: float = 30) -> dict[str, Any]:
        ref = uuid.uuid4().hex
        await self._send({"type": "resume", "ref": ref, "after": after, "limit": limit})
        return await self._answer(ref, ("messages",), timeout)

    async def typing(self, active: bool = True) -> None:
        await self._send({"type": "typing", "active": active})

    async def mark_read(self, up_to: int) -> None:
        await self._send({"type": "read", "up_to": up_to})

    async def mark_delivered(self, up_to: int) -> None:
        """Received up to ``up_to`` (no answer; the server relays ``delivered``)."""
        await self._send({"type": "delivered", "up_to": up_to})

    async def next_event(self, timeout: float | None = None) -> dict[str, Any]:
        if self._buffer:
            return self._buffer.popleft()
        return await self._recv(timeout)

    def drop(self) -> None:
        """Cut the connection without a close handshake (tests a lost network)."""
        with contextlib.suppress(Exception):
            self.ws.transport.abort()

    async def close(self) -> None:
        await self.ws.close()

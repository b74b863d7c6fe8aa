"""A test WebSocket to a live server's case room."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed

from collab.crypto.devproof import sign_ws_proof
from collab.crypto.envelope import Envelope
from collab.crypto.wire import b64d, b64e
from tests.support import schema_check

# Device signing seeds of the test participants (Actor, build_room), by device id, so
# sockets opened from a device id alone can answer the server's challenge.
DEVICE_SEEDS: dict[uuid.UUID, bytes] = {}


def remember_device(device_id: uuid.UUID, dsk_seed: bytes) -> None:
    DEVICE_SEEDS[device_id] = dsk_seed


def room_path(case_id: Any, device_id: Any) -> str:
    """The case socket's path; ``proof=1`` when this test knows the device's key."""
    known = uuid.UUID(str(device_id)) in DEVICE_SEEDS
    return f"/ws/cases/{case_id}/?device={device_id}" + ("&proof=1" if known else "")


def prove_frame(challenge: dict[str, Any], case_id: Any, device_id: Any) -> dict[str, Any]:
    """The answer to a ``challenge`` frame, signed with the device's remembered DSK."""
    device = uuid.UUID(str(device_id))
    sig = sign_ws_proof(
        DEVICE_SEEDS[device], b64d(challenge["nonce"], 32), uuid.UUID(str(case_id)), device
    )
    return {"type": "prove", "sig": b64e(sig)}


async def answer_challenge(communicator: Any, case_id: Any, device_id: Any) -> None:
    """For a channels WebsocketCommunicator opened on ``room_path``: prove the device."""
    if uuid.UUID(str(device_id)) not in DEVICE_SEEDS:
        return
    challenge = await communicator.receive_json_from(timeout=5)
    assert challenge["type"] == "challenge", challenge
    await communicator.send_json_to(prove_frame(challenge, case_id, device_id))


class RoomSocket:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, base: str, session_id: str, case_id: Any, device_id: Any) -> RoomSocket:
        url = base.replace("http://", "ws://") + room_path(case_id, device_id)
        headers = {"Origin": base, "Cookie": f"sessionid={session_id}"}
        ws = await websockets.connect(url, additional_headers=headers, open_timeout=20)
        sock = cls(ws)
        if uuid.UUID(str(device_id)) in DEVICE_SEEDS:
            try:
                challenge = json.loads(await asyncio.wait_for(ws.recv(), timeout=15))
            except ConnectionClosed:
                return sock  # refused before the challenge: closed_with() reads the code
            sock.seen.append(challenge)
            if challenge.get("type") == "challenge":
                await sock.send(prove_frame(challenge, case_id, device_id))
        return sock

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def send_raw(self, text: str) -> None:
        """Text as given, for malformed frames: not checked against the socket
        description (the server's answers still are)."""
        with schema_check.hostile():
            await self.ws.send(text)

    async def next(self, *types: str, timeout: float = 15) -> dict[str, Any]:
        """The next frame of one of ``types`` (others are kept in ``seen``)."""
        while True:
            frame: dict[str, Any] = json.loads(
                await asyncio.wait_for(self.ws.recv(), timeout=timeout)
            )
            self.seen.append(frame)
            if not types or frame["type"] in types:
                return frame

    async def send_envelope(self, envelope: Envelope, ref: str = "r") -> dict[str, Any]:
        await self.send({"type": "send", "ref": ref, "envelope": envelope.to_wire()})
        return await self.next("ack", "error")

    async def closed_with(self, timeout: float = 15) -> int | None:
        try:
            while True:
                frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout=timeout))
                self.seen.append(frame)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None

    async def close(self) -> None:
        await self.ws.close()

"""A test WebSocket to a live server's case room."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets
from websockets.exceptions import ConnectionClosed

from collab.crypto.envelope import Envelope


class RoomSocket:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, base: str, session_id: str, case_id: Any, device_id: Any) -> RoomSocket:
        url = base.replace("http://", "ws://") + f"/ws/cases/{case_id}/?device={device_id}"
        headers = {"Origin": base, "Cookie": f"sessionid={session_id}"}
        ws = await websockets.connect(url, additional_headers=headers, open_timeout=20)
        sock = cls(ws)
        return sock

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def send_raw(self, text: str) -> None:
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

from __future__ import annotations

from typing import Any

from collab.consumers.base import AuthenticatedConsumer


class PingConsumer(AuthenticatedConsumer):
    """A minimal authenticated socket: proves the handshake rules and liveness."""

    activity_frames = frozenset({"activity"})

    async def on_open(self) -> None:
        await self.send_json({"type": "hello", "user": str(self.user.pk)})

    async def handle_activity(self, frame: dict[str, Any]) -> None:
        await self.send_json({"type": "activity.noted"})

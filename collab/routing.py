from __future__ import annotations

import json
from typing import Any

from django.urls import path, re_path

from collab.consumers.case_room import CLOSE_NO_CASE, CaseRoomConsumer
from collab.consumers.inbox import InboxConsumer
from collab.consumers.ping import PingConsumer


async def no_such_socket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Any other path: accepted and closed 4404 (channels' router would raise, and
    daphne answer HTTP 500)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    error = {"type": "error", "code": "no_such_socket", "message": "No socket at this path."}
    await send({"type": "websocket.send", "text": json.dumps(error)})
    await send({"type": "websocket.close", "code": CLOSE_NO_CASE})


websocket_urlpatterns = [
    path("ws/ping/", PingConsumer.as_asgi()),
    path("ws/inbox/", InboxConsumer.as_asgi()),
    # Any id segment: the consumer answers a malformed one with close 4400, not HTTP 500.
    re_path(r"^ws/cases/(?P<case_id>[^/]+)/$", CaseRoomConsumer.as_asgi()),
    re_path(r"", no_such_socket),  # type: ignore[arg-type]  # an ASGI app, not a view
]

"""How many bytes a socket has queued for its client and not yet written out.

ASGI has no backpressure: ``send`` returns as soon as the server has the frame, and a
client that stops reading makes the server buffer without bound. daphne hands every
application instance ``functools.partial(server.handle_reply, protocol)`` as its send
callable; the protocol's Twisted transport keeps what the kernel would not take in its
write buffer. ``OutboundMeter`` (outermost in collab.asgi) captures that callable before
any middleware wraps it, and ``buffered_bytes`` is the one place that reads daphne's and
Twisted's internals.

Fallback: under any other server (or a test communicator) no meter is found and the
socket has no outbound bound; the frame-size and history-page limits still apply.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

SCOPE_KEY = "collab.outbound"

Meter = Callable[[], int | None]


def buffered_bytes(send: Any) -> Meter | None:
    """A function answering the transport's unwritten bytes, or None if unknowable."""
    if not isinstance(send, functools.partial) or not send.args:
        return None
    transport = getattr(send.args[0], "transport", None)
    if transport is None or not hasattr(transport, "dataBuffer"):
        return None

    def measure() -> int | None:
        try:
            # twisted.internet.abstract.FileDescriptor: dataBuffer[offset:] is waiting
            # to be written; _tempDataBuffer holds writes not yet joined into it.
            pending = len(transport.dataBuffer) - int(transport.offset)
            return pending + int(transport._tempDataLen)
        except (AttributeError, TypeError, ValueError):
            return None

    return measure


class OutboundMeter:
    """ASGI middleware: puts the socket's meter in the scope for the consumer."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket":
            scope = dict(scope, **{SCOPE_KEY: buffered_bytes(send)})
        return await self.inner(scope, receive, send)

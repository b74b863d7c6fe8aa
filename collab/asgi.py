"""ASGI entry point: HTTP through Django, sockets through origin, session and 2FA checks."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "collab.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from collab.accounts.ws_auth import (  # noqa: E402
    DatabaseGuard,
    OriginMiddleware,
    SecondFactorMiddleware,
)
from collab.consumers.outbound import OutboundMeter  # noqa: E402
from collab.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # OutboundMeter first: it needs daphne's own send callable (consumers/outbound.py).
        "websocket": OutboundMeter(
            OriginMiddleware(
                DatabaseGuard(
                    AuthMiddlewareStack(SecondFactorMiddleware(URLRouter(websocket_urlpatterns)))
                )
            )
        ),
    }
)

"""A socket's audit address is resolved from its handshake headers exactly as HTTP's."""

from __future__ import annotations

import io

import pytest
from django.core.handlers.asgi import ASGIRequest

from collab.audit.services import RequestMeta


@pytest.fixture
def two_proxies(settings):
    """As COLLAB_PROXY_COUNT=2 sets it (collab/settings.py)."""
    settings.AXES_IPWARE_META_PRECEDENCE_ORDER = ("HTTP_X_FORWARDED_FOR", "REMOTE_ADDR")
    settings.AXES_IPWARE_PROXY_COUNT = 1


def _scope(headers: list[tuple[bytes, bytes]]) -> dict[str, object]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/ws/ping/",
        "query_string": b"",
        "client": ["127.0.0.1", 50000],
        "headers": headers,
    }


def test_repeated_forwarded_lines_are_joined_like_django(two_proxies) -> None:
    # The outer proxy wrote the client's address; the inner one added the outer's
    # address as a second header line. Keeping only the last line would record the
    # outer proxy as the client (and a client could hide behind it).
    headers = [
        (b"x-forwarded-for", b"10.1.2.3"),
        (b"x-forwarded-for", b"10.0.0.2"),
        (b"user-agent", b"ua"),
    ]
    http = RequestMeta.from_request(ASGIRequest(_scope(headers), io.BytesIO()))
    assert http == RequestMeta(address="10.1.2.3", user_agent="ua")
    assert RequestMeta.from_scope(_scope(headers)) == http


def test_a_single_forwarded_line_is_unchanged(two_proxies) -> None:
    headers = [(b"x-forwarded-for", b"10.9.9.9, 10.1.2.3, 10.0.0.2")]
    assert RequestMeta.from_scope(_scope(headers)).address == "10.1.2.3"

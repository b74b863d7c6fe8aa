"""Channel-layer group names and after-commit publishing.

The database is the source of truth; the channel layer is only a doorbell, rung
after the transaction that made the change has committed.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction


def session_group(session_key: str) -> str:
    # Hashed so the session key itself never travels through the channel layer.
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def user_group(user_id: uuid.UUID) -> str:
    return f"user.{user_id.hex}"


def device_group(device_id: uuid.UUID) -> str:
    return f"device.{device_id.hex}"


def case_group(case_id: uuid.UUID) -> str:
    return f"case.{case_id.hex}"


def publish_now(group: str, event: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(group, event)


def publish_after_commit(group: str, event: dict[str, Any]) -> None:
    transaction.on_commit(lambda: publish_now(group, event))

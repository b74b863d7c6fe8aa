"""history_page reads rows as tuples (no models) and serializes each item once: its
items are exactly wire.message_wire of the stored messages, and items_json is exactly
the JSON a socket would have encoded from them."""

from __future__ import annotations

import json

import pytest

from collab.cases import selectors
from collab.cases.models import Message
from collab.cases.services import messages
from collab.cases.wire import message_wire
from tests.support.rooms import build_room

pytestmark = pytest.mark.django_db


def test_history_items_are_message_wire_and_items_json_their_json() -> None:
    sender, reader = build_room(2, "w")
    for i in range(5):
        messages.message_send(
            user=sender.user, device_id=sender.device.device_id, case_id=sender.state.case_id,
            envelope=sender.state.seal({"text": f"m{i} \u00e9"}), urgent=i == 2,
        )
    page = selectors.history_page(case_id=reader.state.case_id,
                                  device_id=reader.device.device_id, after=1, limit=3,
                                  max_bytes=1 << 20)
    stored = Message.objects.filter(case_id=reader.state.case_id, seq__in=[2, 3, 4])
    assert page.items == [message_wire(m) for m in stored.order_by("seq")]
    assert page.more is True
    assert page.items_json == json.dumps(page.items, separators=(",", ":"))
    assert page.item_bytes == len(page.items_json) - 1  # each item plus one separator

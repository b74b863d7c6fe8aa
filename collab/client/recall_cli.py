"""The command line's recall: ``collab-client recall CASE SEQ``, and how history and
watch show a removed message (docs/client.md "Recall")."""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Callable
from typing import Any, TextIO

from collab.client.recall import Removed
from collab.client.sdk import CollabClient

COMMANDS = ("recall",)


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r}") from None


def add_parser(sub: Any) -> None:
    p = sub.add_parser("recall", help="recall one of your messages (within the window)")
    p.add_argument("case", type=_uuid)
    p.add_argument("seq", type=int)


def describe(removed: Removed, name: Callable[[uuid.UUID], str]) -> str:
    who = name(removed.sender_user_id) if removed.sender_user_id is not None else "?"
    return f"#{removed.seq} {who}: [{removed.describe()}]"


def as_json(removed: Removed) -> str:
    return json.dumps({
        "seq": removed.seq,
        "sender": str(removed.sender_user_id) if removed.sender_user_id else None,
        "removed": removed.verdict,
        "at": removed.at.isoformat() if removed.at is not None else None,
        "detail": removed.detail or None,
    }, sort_keys=True)


def run(client: CollabClient, args: argparse.Namespace, out: TextIO) -> None:
    removed = client.recall(args.case, args.seq)
    out.write(f"#{removed.seq} {removed.describe()}\n")

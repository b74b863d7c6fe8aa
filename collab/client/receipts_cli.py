"""The command line's receipts: ``collab-client receipts CASE [--seq N] [--json]``
(docs/client.md "Receipts"): every member's stored read and delivered marks and the
urgent acknowledgements, or for one message the line the browser shows its sender. Only
users of the verified roster are named, and the output says these are the server's
reports (unsigned; protocol.md §7)."""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Callable
from typing import Any, TextIO

from collab.client.receipts import SERVER_REPORTED, CaseReceipts, Mark
from collab.client.sdk import CollabClient

COMMANDS = ("receipts",)


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r}") from None


def add_parser(sub: Any) -> None:
    p = sub.add_parser("receipts", help="who received and read a case's messages, and who "
                                        "acknowledged the urgent ones")
    p.add_argument("case", type=_uuid)
    p.add_argument("--seq", type=int, help="one of your messages: delivered / read / "
                                           "acknowledged per recipient")
    p.add_argument("--json", action="store_true", help="one JSON object")


def _mark(mark: Mark | None) -> str:
    return f"#{mark.up_to} ({mark.at})" if mark is not None else "-"


def lines(receipts: CaseReceipts, name: Callable[[uuid.UUID], str],
          printable: Callable[[object], str]) -> list[str]:
    out = [f"Receipts {SERVER_REPORTED}."]
    out += [f"{name(m.user_id)}: read up to {printable(_mark(m.read))}, "
           f"delivered up to {printable(_mark(m.delivered))}" for m in receipts.members]
    for seq, acks in sorted(receipts.acknowledged.items()):
        who = ", ".join(f"{name(user)} ({printable(at)})" for user, at in acks) or "nobody yet"
        out.append(f"urgent #{seq}: acknowledged by {who}")
    return out


def as_json(receipts: CaseReceipts) -> str:
    def mark(value: Mark | None) -> dict[str, Any] | None:
        return None if value is None else {"up_to": value.up_to, "at": value.at}

    return json.dumps({
        "case": str(receipts.case_id),
        "last_seq": receipts.last_seq,
        "members": [{"user": str(m.user_id), "read": mark(m.read),
                     "delivered": mark(m.delivered)} for m in receipts.members],
        "urgent": {str(seq): [{"user": str(u), "at": at} for u, at in acks]
                   for seq, acks in sorted(receipts.acknowledged.items())},
    }, sort_keys=True)


def run(client: CollabClient, args: argparse.Namespace, out: TextIO,
        name: Callable[[uuid.UUID], str], printable: Callable[[object], str]) -> None:
    receipts = client.receipts(args.case)
    if args.seq is not None:
        out.write(f"#{args.seq} {receipts.summary(args.seq, client.user_id, name)} "
                  f"(as reported by the server)\n")
    elif args.json:
        out.write(as_json(receipts) + "\n")
    else:
        for line in lines(receipts, name, printable):
            out.write(line + "\n")

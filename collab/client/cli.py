"""collab-client: the command line over the collab SDK.

Errors are one line on stderr; exit codes: 0 ok, 1 usage or input, 2 authentication
(sign-in, session, passphrase, recovery key), 3 the server refused, 4 verification
failed (a CryptoError: a signature, hash, log or decryption check) or a trust refusal
(an identity key changed, a patient not bound to the invitation link), 5 unreachable.
An identity change is the one multi-line error: who, the old and new safety numbers,
the cases affected and what to do.

Everything printed that came from the server or from other people (message text,
display names, device names, case fields, error details) goes through ``printable``
first: terminal control sequences cannot recolour, retitle, move the cursor, rewrite
earlier lines or reorder text with bidi controls; another line of a message is indented,
so a message cannot pass for another one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import getpass
import json
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO, cast

from tqdm import tqdm

from collab.client import consult_cli, recall_cli, receipts_cli
from collab.client.errors import (
    EXIT_USAGE,
    EXIT_VERIFY,
    ClientError,
    IdentityChangedError,
    ServerRefusedError,
    UsageError,
)
from collab.client.export import cli as export_cli
from collab.client.keystore import Keystore
from collab.client.markup_cli import add_mark_arguments, mark_options, marking_summary
from collab.client.recall import Removed
from collab.client.retention import retention_line
from collab.client.sdk import CollabClient, JoinRequest, Progress, Received
from collab.crypto.errors import CryptoError
from collab.crypto.invite import short_code
from collab.crypto.roster import Role

PROG = "collab-client"

# ESC sequences: CSI (ESC [ or 8-bit 0x9b, parameters, final byte); the string ones
# (OSC, DCS, SOS, PM, APC: ESC ] P X ^ _ or 0x9d 0x90 0x98 0x9e 0x9f) up to BEL or ST;
# any other ESC with its intermediate and final bytes.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]?"
)
# What is left of C0 (but tab and newline) and C1, DEL, and the bidi controls
# (embeddings, overrides, isolates, marks) that reorder what a terminal shows.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                       "\u2066-\u2069]")


def printable(text: object, *, multiline: bool = False) -> str:
    """``text`` without terminal control sequences; a line break becomes a space unless
    ``multiline`` (then later lines are indented by the caller where it matters)."""
    clean = _ESCAPES.sub("", str(text))
    clean = clean.replace("\r\n", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
    clean = _CONTROLS.sub("", clean).replace("\t", " ")
    return clean if multiline else clean.replace("\n", " ")


class _Printable:
    """A stream that writes only printable text: the last line of defence for anything
    untrusted a command forgot to pass through ``printable``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(printable(text, multiline=True))

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message, code="usage")


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="End-to-end-encrypted case rooms from the terminal.")
    parser.add_argument("--server", default=os.environ.get("COLLAB_SERVER"),
                        help="server URL (env COLLAB_SERVER; default: the one you signed in to)")
    parser.add_argument("--home", default=os.environ.get("COLLAB_HOME"),
                        help="keystore directory (env COLLAB_HOME; default ~/.collab)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("login", help="sign in with password and TOTP code")
    p.add_argument("--username", required=True)
    p.add_argument("--code", help="TOTP code (prompted if omitted)")
    sub.add_parser("logout", help="sign out and forget the session")
    p = sub.add_parser("init", help="create your identity key and this device (first device)")
    p.add_argument("--name", default="collab-client", help="device name")
    p = sub.add_parser("recover", help="certify this device with your recovery key")
    p.add_argument("--recovery-key", default=os.environ.get("COLLAB_RECOVERY_KEY"))
    p.add_argument("--name", default="collab-client", help="device name")
    sub.add_parser("whoami", help="your user id, device id and server")
    sub.add_parser("devices", help="list your devices")
    sub.add_parser("cases", help="list your cases")
    p = sub.add_parser("open", help="open a case (you become its owner)")
    p.add_argument("--specialty", default="")
    p.add_argument("--urgency", default="routine")
    p = sub.add_parser("add", help="add a user to a case (signed log entry)")
    p.add_argument("case", type=_uuid)
    p.add_argument("user", type=_uuid)
    p.add_argument("--role", choices=["member", "admin", "owner", "patient"], default="member")
    p.add_argument("--accept-changed-identity", metavar="CODE", default=None,
                   help="add even though their identity key changed, to the key with this "
                        "short code (as shown with the change); pins that key")
    p.add_argument("--code-compared", action="store_true",
                   help="a patient: you compared their short code by voice and it matched")
    p = sub.add_parser("remove", help="remove a user from a case (new epoch key)")
    p.add_argument("case", type=_uuid)
    p.add_argument("user", type=_uuid)
    p = sub.add_parser("join-requests", help="pending requests to join a case, for review")
    p.add_argument("case", type=_uuid)
    p = sub.add_parser("admit", help="admit one pending join request (signed log entry)")
    p.add_argument("case", type=_uuid)
    p.add_argument("user", type=_uuid)
    p.add_argument("--role", choices=["member", "admin", "owner", "patient"], default=None,
                   help="default: patient for a patient invitation, else member")
    p.add_argument("--accept-changed-identity", metavar="CODE", default=None,
                   help="admit even though their identity key changed, to the key with this "
                        "short code (as listed); pins that key")
    p.add_argument("--code-compared", action="store_true",
                   help="you compared the patient's short code by voice and it matched")
    p = sub.add_parser("decline", help="decline a pending join request")
    p.add_argument("case", type=_uuid)
    p.add_argument("user", type=_uuid)
    p.add_argument("--reason", default="")
    p = sub.add_parser("withdraw", help="withdraw your own pending request to join a case")
    p.add_argument("case", type=_uuid)
    sub.add_parser("identities", help="pinned identity keys and pending changes")
    p = sub.add_parser("verify", help="mark a user's identity key verified after comparing "
                                      "safety numbers in person")
    p.add_argument("user", type=_uuid)
    p.add_argument("--case", type=_uuid, default=None,
                   help="the key in this case's verified roster (default: the pinned key)")
    p.add_argument("--confirm", metavar="CODE", default=None,
                   help="the numbers matched: mark the key with this short code (shown with "
                        "the numbers) verified; without it: only show them")
    p = sub.add_parser("accept-identity", help="accept a user's changed identity key "
                                               "(withdraws any verification)")
    p.add_argument("user", type=_uuid)
    p.add_argument("code", help="the short code of the new key, as shown with the change")
    p = sub.add_parser("invite", help="invite the patient: prints the link to hand over")
    p.add_argument("case", type=_uuid)
    p = sub.add_parser("prove-invitation",
                       help="as the invited patient: bind your identity key to the link")
    p.add_argument("link", help="the invitation link, with its #k= part")
    p = sub.add_parser("adopt", help="add your other devices to a case from this one (a new "
                                     "device joins by itself with `enrol`)")
    p.add_argument("case", type=_uuid)
    sub.add_parser("enrol", help="enrol this device in every case of yours it is not in yet "
                                 "(done by `recover`)")
    retry_help = ("the id a failed send printed: send that waiting message, not a new one "
                  "(without it the same text is a second message)")
    p = sub.add_parser("send", help="send a text message ('-' reads stdin)")
    p.add_argument("case", type=_uuid)
    p.add_argument("text")
    p.add_argument("--retry", default=None, metavar="ID", help=retry_help)
    p = sub.add_parser("send-image", help="sanitise, encrypt and send an image")
    p.add_argument("case", type=_uuid)
    p.add_argument("path", type=Path)
    p.add_argument("--caption", default="")
    p.add_argument("--retry", default=None, metavar="ID", help=retry_help)
    add_mark_arguments(p)
    p = sub.add_parser("watch", help="live, verified and decrypted messages")
    p.add_argument("case", type=_uuid)
    p.add_argument("--after", type=int, default=None,
                   help="server sequence number to resume after (default: last seen)")
    p.add_argument("--count", type=int, default=None, help="stop after this many messages")
    p.add_argument("--timeout", type=float, default=None,
                   help="stop after this many seconds without a message")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = sub.add_parser("history", help="stored messages, verified and decrypted")
    p.add_argument("case", type=_uuid)
    p.add_argument("--after", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = sub.add_parser("fetch-image", help="download and decrypt a message's image")
    p.add_argument("case", type=_uuid)
    p.add_argument("seq", type=int)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--thumbnail", action="store_true")
    p.add_argument("--original", action="store_true",
                   help="the unmarked original a marked image was sent with")
    p = sub.add_parser("safety-number", help="the safety number to compare in person")
    p.add_argument("user", type=_uuid)
    p.add_argument("--case", type=_uuid, default=None,
                   help="use the key in this case's verified roster")
    export_cli.add_parser(sub)
    consult_cli.add_parsers(sub)
    recall_cli.add_parser(sub)
    receipts_cli.add_parser(sub)
    return parser


# --- context ---------------------------------------------------------------------------

def keystore_path(home: str | None) -> Path:
    base = Path(home).expanduser() if home else Path.home() / ".collab"
    return base / "keystore.json"


def _passphrase(new: bool) -> str:
    env = os.environ.get("COLLAB_PASSPHRASE")
    if env:
        return env
    if not sys.stdin.isatty():
        raise UsageError("set COLLAB_PASSPHRASE or run in a terminal", code="no_passphrase")
    first = getpass.getpass("Keystore passphrase: ")
    if new and getpass.getpass("Repeat the passphrase: ") != first:
        raise UsageError("the passphrases differ", code="passphrase_mismatch")
    return first


def open_client(args: argparse.Namespace, *, create: bool = False) -> CollabClient:
    path = keystore_path(args.home)
    if create and not path.exists():
        store = Keystore.create(path, _passphrase(new=True))
    else:
        store = Keystore.load(path, _passphrase(new=False))
    return CollabClient(args.server, keystore=store)


def _progress(label: str) -> tuple[Progress, Callable[[], None]]:
    bar: list[Any] = []

    def update(done: int, total: int) -> None:
        if not bar:
            bar.append(tqdm(total=total, unit="B", unit_scale=True, desc=label,
                            file=sys.stderr, disable=None, leave=False))
        bar[0].update(done)

    def close() -> None:
        if bar:
            bar[0].close()

    return update, close


class _Names:
    """Display names for user ids (best effort; the id is shown when unknown)."""

    def __init__(self, client: CollabClient) -> None:
        self.client = client
        self.cache: dict[uuid.UUID, str] = {}

    def __call__(self, user_id: uuid.UUID) -> str:
        if user_id not in self.cache:
            try:
                name = str(self.client.call("GET", f"/api/users/{user_id}/keys")["display_name"])
            except ClientError:
                name = ""
            self.cache[user_id] = printable(name) or str(user_id)[:8]
        return self.cache[user_id]


def _describe(msg: Received, name: Callable[[uuid.UUID], str]) -> str:
    when = datetime.datetime.fromtimestamp(msg.header.sent_ms / 1000, datetime.UTC)
    stamp = when.strftime("%Y-%m-%d %H:%M:%S")
    # The sender chose every byte of the text and the manifest: controls out, and each
    # further line indented so that it cannot pass for another message.
    text = printable(msg.text, multiline=True).replace("\n", "\n    ")
    image = msg.image()
    if msg.unavailable_author is not None:
        text = (f"[not available on this device: the key in the entry by "
                f"{name(msg.unavailable_author)} could not be opened]")
    elif msg.unavailable is not None:
        text = f"[{printable(msg.unavailable)}]"
    elif image is not None:
        text = f"[image {image.width}x{image.height} {printable(image.mime)}, " \
               f"{image.size} bytes{marking_summary(msg)}; " \
               f"fetch-image {msg.header.case_id} {msg.seq}] {text}".rstrip()
    tag = consult_cli.describe_tag(msg)  # consult_request, consult_report, time_entry
    if tag:
        text = f"{tag} {text}".rstrip()
    line = f"#{msg.seq} {stamp} {name(msg.sender_user_id)} (epoch {msg.epoch}): {text}"
    if msg.gap is not None:
        line += (f"\n  (missing messages from this sender: "
                 f"{msg.gap.first_missing}..{msg.gap.last_missing})")
    return line


def _as_json(msg: Received) -> str:
    return json.dumps({
        "seq": msg.seq, "epoch": msg.epoch, "sender": str(msg.sender_user_id),
        "sender_device": str(msg.header.sender_device_id), "sent_ms": msg.header.sent_ms,
        "content_type": msg.header.content_type, "body": msg.body,
        "gap": None if msg.gap is None else [msg.gap.first_missing, msg.gap.last_missing],
        "unavailable": msg.unavailable,
        "unavailable_author": None if msg.unavailable_author is None
        else str(msg.unavailable_author),
    }, sort_keys=True)


def _numbers(groups: Sequence[str]) -> str:
    return " ".join(groups[:6]) + "  " + " ".join(groups[6:])


PIN_LABELS = {"new": "NEW", "pinned": "PINNED", "verified": "VERIFIED", "changed": "CHANGED",
              "none": "NO KEY YET"}
WHY = {"claim": "claims the consult", "invite": "named invitation",
       "patient": "patient invitation"}
BINDING = {"bound": "bound to this case's invitation link",
           "unbound": "NOT bound to the invitation link (no proof)",
           "bad_proof": "BAD PROOF: the key does not match the invitation link"}


def _join_request_lines(r: JoinRequest, name: Callable[[uuid.UUID], str]) -> list[str]:
    who = printable(", ".join(x for x in (r.role, r.organisation, r.specialty) if x))
    why = WHY.get(r.kind) or printable(r.kind)
    if r.kind == "invite" and r.requested_by is not None:
        why += f" by {name(r.requested_by)}"
    lines = [f"{r.user} {printable(r.display_name) or name(r.user)}"
             + (f" ({who})" if who else ""),
             f"  why: {why}; requested {printable(r.created_at)}",
             f"  identity key: {PIN_LABELS.get(r.pin) or printable(r.pin.upper())}"]
    if r.uik is not None:
        lines[-1] += f", code {' '.join(short_code(r.user, r.uik))}"
    if r.pin == "changed":
        lines[-1] += (" (admit only after comparing numbers, with "
                      "--accept-changed-identity and this code)")
    if r.problem:
        lines.append(f"  cannot be admitted as served: {printable(r.problem)}")
    if r.patient:
        binding = r.binding or "unbound"
        lines.append(f"  binding: {BINDING.get(binding) or printable(binding)}")
        if r.short_code:
            lines.append(f"  short code: {' '.join(r.short_code)}" + (
                "" if r.binding == "bound" else
                " (ask the patient to read theirs; admit with --code-compared if it matches)"))
    return lines


def _identity_changed_lines(error: IdentityChangedError,
                            name: Callable[[uuid.UUID], str] | None) -> list[str]:
    lines: list[str] = []
    for c in error.changes:
        who = name(c.user) if name else str(c.user)
        lines += [f"{who}'s identity key changed" + (" (it was verified)" if c.was_verified
                                                     else ""),
                  f"  user: {c.user}",
                  f"  old safety number: {_numbers(c.old_safety)}",
                  f"  new safety number: {_numbers(c.new_safety)}",
                  f"  new key code: {' '.join(short_code(c.user, c.new_uik))}",
                  "  cases affected: " + (", ".join(str(x) for x in c.cases) or "-")]
    lines.append("  nothing was signed or sent. Compare the new number with them in person, "
                 "then `verify USER --case CASE --confirm CODE` or `accept-identity USER CODE` "
                 "with the new key code.")
    return lines



# --- commands ---------------------------------------------------------------------------

def cmd_login(args: argparse.Namespace, out: TextIO) -> None:
    password = os.environ.get("COLLAB_PASSWORD") or getpass.getpass("Password: ")
    code = args.code or input("TOTP code: ")
    code = re.sub(r"\s*\(.*\)\s*$", "", code)  # demo_code prints "123456  (valid for ...)"
    client = open_client(args, create=True)
    client.login(args.username, password, code)
    out.write(f"signed in as {args.username} at {client.state.server}\n")
    if client.state.device is None:
        out.write("next: `collab-client init` (first device) or `collab-client recover`\n")


def cmd_init(args: argparse.Namespace, out: TextIO) -> None:
    client = open_client(args)
    recovery = client.init(args.name)
    out.write(f"identity and device registered; user {client.user_id}, "
              f"device {client.device.device_id}\n")
    out.write("RECOVERY KEY (write it down now; it is shown only once and the server "
              "never sees it):\n")
    out.write(f"  {recovery}\n")


def cmd_recover(args: argparse.Namespace, out: TextIO) -> None:
    client = open_client(args)
    key = args.recovery_key or getpass.getpass("Recovery key: ")
    outcome = client.recover(key, args.name)
    out.write(f"device {client.device.device_id} certified and registered\n")
    _write_enrolment(outcome, out)


def _write_enrolment(outcome: dict[uuid.UUID, str], out: TextIO) -> None:
    for case_id, result in outcome.items():
        if result == "enrolled":
            out.write(f"enrolled this device in case {case_id}\n")
        elif result.startswith("failed"):
            out.write(f"could not enrol this device in case {case_id}: {result}\n")
    if not any(r == "enrolled" or r.startswith("failed") for r in outcome.values()):
        out.write("this device is in all your cases\n")


def run(args: argparse.Namespace, out: TextIO, err: TextIO | None = None) -> None:
    command = args.command
    if command == "login":
        return cmd_login(args, out)
    if command == "init":
        return cmd_init(args, out)
    if command == "recover":
        return cmd_recover(args, out)
    client = open_client(args)
    names = _Names(client)
    err = err or cast(TextIO, _Printable(sys.stderr))
    if command == "logout":
        client.logout()
        out.write("signed out\n")
    elif command == "whoami":
        device = client.state.device
        out.write(f"user {client.user_id} ({client.state.username})\n"
                  f"device {device.device_id if device else '-'}\n"
                  f"server {client.state.server}\n")
        if client.state.identity is not None:  # what a patient reads out to be admitted
            code = short_code(client.user_id, client.state.identity.uik_pub)
            out.write(f"short code {' '.join(code)}\n")
    elif command == "devices":
        for d in client.devices():
            mark = " (this device)" if client.state.device and \
                d["device_id"] == str(client.state.device.device_id) else ""
            revoked = " revoked" if d.get("revoked_at") else ""
            out.write(f"{printable(d['device_id'])} {printable(d.get('name', ''))}"
                      f"{revoked}{mark}\n")
    elif command == "cases":
        for c in client.list_cases():
            fields = (c["id"], c["status"], c["urgency"], c["specialty"] or "-")
            out.write(" ".join(printable(f) for f in fields)
                      + f" epoch {printable(c['head']['epoch'])} "
                        f"messages {printable(c['last_seq'])}\n")
            # What will be deleted and when, as the browser says it (retention.py).
            _, line = retention_line(c.get("retention"), now=datetime.datetime.now(datetime.UTC))
            if line:
                out.write(f"    {printable(line)}\n")
    elif command == "open":
        out.write(f"{client.open_case(args.specialty, args.urgency)}\n")
    else:
        try:
            _run_client(client, args, out, names, err)
        except IdentityChangedError as error:
            error.names = names
            raise
    return None


def _run_client(client: CollabClient, args: argparse.Namespace, out: TextIO,
                names: _Names, err: TextIO) -> None:
    command = args.command
    if command == "add":
        entry = client.add_member(args.case, args.user, Role[args.role.upper()],
                                  accept_changed=args.accept_changed_identity,
                                  code_compared=args.code_compared)
        out.write(f"added {args.user}; case is now at epoch {entry.epoch}\n")
    elif command == "remove":
        entry = client.remove_member(args.case, args.user)
        out.write(f"removed {args.user}; new epoch {entry.epoch}\n")
    elif command == "join-requests":
        requests = client.join_requests(args.case)
        for r in requests:
            out.write("\n".join(_join_request_lines(r, names)) + "\n")
        if not requests:
            out.write("no pending join requests\n")
    elif command == "admit":
        entry = client.admit(args.case, args.user,
                             role=Role[args.role.upper()] if args.role else None,
                             accept_changed=args.accept_changed_identity,
                             code_compared=args.code_compared)
        out.write(f"admitted {args.user}; case is now at epoch {entry.epoch}\n")
    elif command == "decline":
        client.decline(args.case, args.user, args.reason)
        out.write(f"declined the request of {args.user}\n")
    elif command == "withdraw":
        client.withdraw(args.case)
        out.write(f"withdrew your request to join {args.case}\n")
    elif command == "identities":
        _identities(client, out, names)
    elif command == "verify":
        groups = client.safety_number(args.user, args.case)
        if args.confirm is None:
            code = " ".join(short_code(args.user, client.identity_key(args.user, args.case)))
            out.write(_numbers(groups) + "\n")
            out.write(f"compare this with {names(args.user)} in person; if it matches, run "
                      f"again with --confirm '{code}' (the code of this key)\n")
        else:
            client.verify_identity(args.user, args.case, confirm=args.confirm)
            out.write(f"{names(args.user)} verified ({_numbers(groups)})\n")
    elif command == "accept-identity":
        client.accept_identity(args.user, args.code)
        out.write(f"accepted the new identity key of {names(args.user)} (not verified; "
                  "compare safety numbers and `verify` when you can)\n")
    elif command == "invite":
        answer, link = client.invite_patient(args.case)
        out.write(f"invitation {printable(answer.get('id'))} "
                  f"(expires {printable(answer.get('expires_at'))}); "
                  "hand this link to the patient only:\n")
        out.write(f"  {link}\n")
    elif command == "prove-invitation":
        proved = client.prove_invitation(args.link)
        out.write(f"bound your identity key to invitation {printable(', '.join(proved))}; a "
                  "member can now admit you\n")
    elif command == "adopt":
        adopted = client.adopt_devices(args.case)
        out.write("".join(f"added device {d}\n" for d in adopted) or "all your devices are in\n")
    elif command == "enrol":
        outcome = client.enrol_cases()
        _write_enrolment(outcome, out)
        if any(r.startswith("failed") for r in outcome.values()):
            raise ServerRefusedError("this device could not be enrolled in every case",
                                     code="enrol_incomplete")
    elif command == "send":
        text = sys.stdin.read() if args.text == "-" else args.text
        with _pending_hint(client, args.case):
            sent = asyncio.run(client.send_text(args.case, text, retry=args.retry))
        out.write(f"sent #{sent.seq} (epoch {sent.epoch})\n")
    elif command == "send-image":
        update, close = _progress("upload")
        try:
            with _pending_hint(client, args.case):
                sent = asyncio.run(client.send_image(args.case, args.path,
                                                     caption=args.caption, progress=update,
                                                     retry=args.retry, **mark_options(args)))
        finally:
            close()
        out.write(f"sent image #{sent.seq} (epoch {sent.epoch})\n")
    elif command == "history":
        for msg in client.timeline(args.case, after=args.after):
            if isinstance(msg, Removed):  # a removed message (recall_cli)
                line = recall_cli.as_json(msg) if args.json else recall_cli.describe(msg, names)
                out.write(line + "\n")
                continue
            out.write((_as_json(msg) if args.json else _describe(msg, names)) + "\n")
    elif command == "watch":
        asyncio.run(_watch(client, args, out, names, err))
    elif command == "fetch-image":
        msg = client.message(args.case, args.seq)
        manifest = msg.image(thumbnail=args.thumbnail, original=args.original)
        if manifest is None and args.original and msg.image() is not None:
            raise UsageError(f"message #{args.seq} was sent without its original",
                             code="no_original")
        if manifest is None:
            raise UsageError(f"message #{args.seq} carries no image", code="no_image")
        ext = ".png" if manifest.mime == "image/png" else ".jpg"
        suffix = "-original" if args.original else "-thumb" if args.thumbnail else ""
        target = args.out or Path(f"case-{str(args.case)[:8]}-{args.seq}{suffix}{ext}")
        update, close = _progress("download")
        try:
            client.download(manifest, target, progress=update)
        finally:
            close()
        out.write(f"{target} ({manifest.width}x{manifest.height} {manifest.mime}, verified)\n")
    elif command == "export":
        export_cli.run(client, args, out)
    elif command in consult_cli.COMMANDS:
        consult_cli.run(client, args, out, names, printable)
    elif command in recall_cli.COMMANDS:
        recall_cli.run(client, args, out)
    elif command in receipts_cli.COMMANDS:
        receipts_cli.run(client, args, out, names, printable)
    elif command == "safety-number":
        groups = client.safety_number(args.user, args.case)
        out.write(" ".join(groups[:6]) + "\n" + " ".join(groups[6:]) + "\n")


@contextlib.contextmanager
def _pending_hint(client: CollabClient, case_id: uuid.UUID) -> Iterator[None]:
    """A send that failed while its message still waits in the outbox: say so, and how
    to send that one (``--retry ID``; the same command without it sends a second copy)."""
    try:
        yield
    except ClientError as error:
        if error.pending_id is not None:
            error.message += (f"; the message waits in the outbox as {error.pending_id}: run "
                              f"the same command with --retry {error.pending_id} to send it "
                              "(without --retry it is sent as a new message)")
        raise


def _identities(client: CollabClient, out: TextIO, names: _Names) -> None:
    records = client.identities()
    for user, record in records:
        number = client.safety_number(user)
        out.write(f"{user} {names(user)} {record.state.upper()} {_numbers(number)} "
                  f"(code {' '.join(short_code(user, record.uik))})\n")
    if not records:
        out.write("no identity keys pinned yet\n")
    changes = client.identity_changes()
    if changes:
        out.write("\n".join(_identity_changed_lines(IdentityChangedError(changes), names))
                  + "\n")


async def _watch(client: CollabClient, args: argparse.Namespace, out: TextIO,
                 names: _Names, err: TextIO) -> None:
    def notice(kind: str, detail: dict[str, Any]) -> None:
        # Frames from the server: every field through printable.
        field = {k: printable(v) for k, v in detail.items()}
        if kind == "log":
            err.write(f"-- membership changed: epoch {field.get('epoch')} "
                      f"({field.get('action')}), verified\n")
        elif kind == "join_request":
            err.write(f"-- join request from {field.get('user')} "
                      f"(review: join-requests {args.case})\n")
        elif kind == "join_resolved":
            err.write(f"-- join request of {field.get('user')} {field.get('status')}\n")
        elif kind == "reconnecting":
            err.write(f"-- connection lost ({field.get('code')}); resuming after "
                      f"#{field.get('after')}\n")
        elif kind in ("recalled", "removed"):  # judged by the client (collab/client/recall.py)
            err.write(f"-- #{field.get('seq')} {field.get('text')}\n")
        elif kind == "send_failed":
            err.write(f"-- a pending message was refused ({field.get('code')}): "
                      f"{field.get('message')}\n")

    count = 0
    stream = client.watch(args.case, args.after, on_notice=notice)
    async with contextlib.aclosing(stream):
        while args.count is None or count < args.count:
            try:
                msg = await asyncio.wait_for(anext(stream), args.timeout)
            except TimeoutError:
                break
            except StopAsyncIteration:  # pragma: no cover - watch never ends by itself
                break
            out.write((_as_json(msg) if args.json else _describe(msg, names)) + "\n")
            out.flush()
            count += 1


def main(argv: Sequence[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    # Whatever is written, terminal controls are taken out (see printable).
    stdout = cast(TextIO, _Printable(out or sys.stdout))
    stderr = cast(TextIO, _Printable(err or sys.stderr))
    try:
        args = build_parser().parse_args(argv)
        run(args, stdout, stderr)
    except CryptoError as failure:
        stderr.write(f"{PROG}: verification failed ({failure.code}): "
                     f"{printable(failure.message or failure.code)}\n")
        return EXIT_VERIFY
    except IdentityChangedError as failure:
        lines = _identity_changed_lines(failure, failure.names)
        if failure.detail:  # e.g. the key served is not the one accepted
            lines[0] = f"{failure.detail}; {lines[0]}"
        stderr.write(f"{PROG}: error (identity_changed): " + "\n".join(lines) + "\n")
        return failure.exit_code
    except ClientError as failure:
        stderr.write(f"{PROG}: error ({printable(failure.code)}): "
                     f"{printable(failure.message)}\n")
        return failure.exit_code
    except KeyboardInterrupt:
        stderr.write(f"{PROG}: interrupted\n")
        return 130
    except EOFError:
        stderr.write(f"{PROG}: error (usage): input ended\n")
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: loading a case log of N single additions, before and after the verified head.

    .venv/bin/python -m tests.bench.bench_log_verify [--n 1000]

One user adds N devices to a case one add_device entry at a time, so entry e carries a
roster of e + 1 devices (the growth issue 12 found). A client then loads the log:

- before: every entry verified from genesis (each roster's certificates checked again,
  ~N²/2 signature checks), what every load did before the verified head was kept;
- after, a later load: the same entries taken by their hash links to the kept head;
- after, one new entry: the kept head at N - 1, one entry verified on top.

Prints seconds, signature checks and the log's size (binary, serialized JSON, pages at
the server's LOG_PAGE_MAX_BYTES). Figures, not assertions: no timing is asserted anywhere.
The roster cap (MAX_ROSTER_DEVICES, default 200) keeps a real case far below N = 1000.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from collab.client.case_state import CaseState, VerifiedHead
from collab.client.keys import DeviceKeys, Identity
from collab.crypto import primitives as prim
from collab.crypto.actions import AddDeviceBody, CreateBody, apply_action
from collab.crypto.log import (
    LogEntry,
    Wrap,
    action_for,
    build_entry,
    key_commit,
    wrap_nonce,
    wrap_plaintext,
)

LOG_PAGE_MAX_BYTES = 1024 * 1024  # the server's default (collab/settings.py)
LOG_ITEM_OVERHEAD = 256  # as collab.cases.selectors.log_entry_size


def build_chain(n: int) -> tuple[list[LogEntry], DeviceKeys]:
    """Genesis plus ``n`` add_device entries by the owner's first device. Only that
    device's wrap is real (the client below opens it); the others are well-formed
    filler, which verification checks only by count and length, as for any device."""
    identity = Identity.generate(uuid.uuid4())
    first = DeviceKeys.generate(identity.user_id)
    genesis, _ = build_entry(
        None, CreateBody(identity.uik_pub, (identity.certify(first),)),
        author_seed=first.dsk_seed, author_user_id=identity.user_id,
        author_device_id=first.device_id, created_ms=1, case_id=uuid.uuid4(),
    )
    chain = [genesis]
    for _ in range(n):
        prev = chain[-1]
        body = AddDeviceBody(identity.certify(DeviceKeys.generate(identity.user_id)))
        epoch = prev.epoch + 1
        roster = apply_action(prev.roster, epoch=epoch, author_user_id=identity.user_id, body=body)
        epoch_key, epk_secret = prim.random_bytes(32), prim.random_bytes(32)
        epk = prim.x25519_public(epk_secret)
        filler = bytes(len(genesis.wraps[0].ciphertext))
        wraps = tuple(
            Wrap(d.device_id, prim.box_seal(
                epk_secret, d.dxk_pub, wrap_nonce(epk, d.device_id, epoch),
                wrap_plaintext(prev.case_id, epoch, prev.entry_hash(), d.device_id, epoch_key),
            ) if d.device_id == first.device_id else filler)
            for d in roster.devices
        )
        template = dataclasses.replace(
            genesis, epoch=epoch, prev_hash=prev.entry_hash(), created_ms=epoch + 1,
            action=action_for(body), action_body=body.encode(), roster=roster,
            key_commit=key_commit(epoch_key, prev.case_id, epoch), epk=epk, wraps=wraps,
        )
        chain.append(dataclasses.replace(
            template, signature=prim.sign(first.dsk_seed, template.signed_bytes())))
    return chain, first


@contextmanager
def counting_signatures() -> Iterator[list[int]]:
    count = [0]
    real: Callable[..., Any] = prim.verify

    def verify(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return real(*args, **kwargs)

    prim.verify = verify
    try:
        yield count
    finally:
        prim.verify = real


def measure(label: str, run: Callable[[], object]) -> None:
    with counting_signatures() as sigs:
        start, cpu = time.perf_counter(), time.process_time()
        run()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    # CPU seconds too: on a shared machine the wall clock says more about the neighbours.
    print(f"{label:<34} {seconds:9.3f} s ({cpu:8.3f} s CPU)  {sigs[0]:>9,} signature checks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="single additions (default 1000)")
    args = parser.parse_args()
    start = time.perf_counter()
    chain, device = build_chain(args.n)
    print(f"built genesis + {args.n} add_device entries in {time.perf_counter() - start:.1f} s")
    raws = [e.encode() for e in chain]
    serialized = [4 * ((len(r) + 2) // 3) + LOG_ITEM_OVERHEAD for r in raws]
    pages, used = 1, 0
    for size in serialized:
        if used and used + size > LOG_PAGE_MAX_BYTES:
            pages, used = pages + 1, 0
        used += size
    print(f"log: {sum(map(len, raws)) / 1e6:.1f} MB binary, {sum(serialized) / 1e6:.1f} MB "
          f"serialized, {pages} pages of at most {LOG_PAGE_MAX_BYTES // 1024} KiB "
          f"(the largest entry {max(serialized) / 1e3:.0f} KB)")
    # What a client receives: the entries decoded from their bytes, as after a fetch.
    decoded = [LogEntry.decode(r) for r in raws]
    case_id = chain[0].case_id
    head = VerifiedHead(chain[-1].epoch, chain[-1].entry_hash())
    before_head = VerifiedHead(chain[-2].epoch, chain[-2].entry_hash())
    measure("before: every entry verified",
            lambda: CaseState(case_id, device).accept_entries(decoded))
    measure("after: a later load (kept head)",
            lambda: CaseState(case_id, device).accept_entries(decoded, verified=head))
    measure("after: one new entry on the head",
            lambda: CaseState(case_id, device).accept_entries(decoded, verified=before_head))
    start = time.perf_counter()
    [LogEntry.decode(r) for r in raws]
    print(f"{'(decoding the entries alone)':<34} {time.perf_counter() - start:9.3f} s")


if __name__ == "__main__":
    main()

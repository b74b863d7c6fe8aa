"""Which stored messages name a blob: a header's attachment reference, in SQL.

A header encodes each attachment as ``blob_id(16) || root(64)`` (protocol-crypto, the
envelope). No column links a blob to the message naming it, so a message names a blob
when its header holds those 80 bytes: a match anywhere else in a header is as unlikely
as guessing the blob's id and root together. Used by the send (one blob, one message:
``blob_already_attached``) and by the recall (never delete a blob another message that
is not removed still names).
"""

from __future__ import annotations

from typing import Any

from django.db import NotSupportedError
from django.db.models import BooleanField, Exists, F, Func, OuterRef, QuerySet

from collab.cases import models as m


class HeaderNames(Func):
    """``header`` holds the reference ``blob_id || root`` (both may be outer refs)."""

    output_field = BooleanField()

    def __init__(self, header: Any, blob_id: Any, root: Any) -> None:
        super().__init__(header, blob_id, root)

    def _compiled(self, compiler: Any) -> list[tuple[str, list[Any]]]:
        return [compiler.compile(e) for e in self.get_source_expressions()]

    def as_sql(self, *args: Any, **kwargs: Any) -> Any:
        raise NotSupportedError("HeaderNames runs on SQLite and PostgreSQL only")

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        (header, hp), (blob_id, bp), (root, rp) = self._compiled(compiler)
        return (f"(position(uuid_send({blob_id}) || {root} in {header}) > 0)",
                [*bp, *rp, *hp])

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        (header, hp), (blob_id, bp), (root, rp) = self._compiled(compiler)
        # A UUIDField is stored as 32 lowercase hex digits and hex() gives upper case; the
        # header's hex is searched (unhex() needs SQLite 3.41).
        return (f"(instr(hex({header}), upper({blob_id}) || hex({root})) > 0)",
                [*hp, *bp, *rp])


def named_by(messages: QuerySet[m.Message]) -> Exists:
    """For a blob query: one of ``messages`` (same case) names the blob."""
    return Exists(
        messages.filter(case_id=OuterRef("case_id")).filter(
            HeaderNames(F("header"), OuterRef("pk"), OuterRef("root"))
        )
    )

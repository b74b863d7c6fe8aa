"""The recall endpoint: parse, call services.recall, answer (docs/workflow.md "Recall")."""

from __future__ import annotations

import uuid

from django.http import HttpRequest, HttpResponse, JsonResponse

from collab.api import api, json_body, proven_device, user_of
from collab.audit.services import RequestMeta
from collab.cases.services import recall
from collab.crypto.wire import MAX_SAFE_INT, b64d
from collab.errors import ServiceError


@api(("POST",))
def message_recall(request: HttpRequest, case_id: uuid.UUID, seq: int) -> HttpResponse:
    """The sender's signed recall of message ``seq``: the acting device (proven like
    every device-acting call) is the one that signed ``sig``."""
    device_id = proven_device(request)
    body = json_body(request)
    recalled_ms = body.get("recalled_ms")
    if (not isinstance(recalled_ms, int) or isinstance(recalled_ms, bool)
            or not 0 <= recalled_ms <= MAX_SAFE_INT):
        raise ServiceError("bad_field", "recalled_ms must be a Unix time in milliseconds.")
    result = recall.message_recall(
        user=user_of(request),
        device_id=device_id,
        case_id=case_id,
        seq=seq,
        recalled_ms=recalled_ms,
        sig=b64d(body.get("sig"), 64),
        meta=RequestMeta.from_request(request),
    )
    frame = recall.recalled_frame(result)
    del frame["type"]
    return JsonResponse({**frame, "removed_blobs": [str(b) for b in result.blob_ids]})

from __future__ import annotations

import uuid

from collab.cases.models import Case
from collab.crypto.errors import CryptoError
from collab.errors import Forbidden, NotFound, ServiceError

# Codes that mean "you may not", as opposed to "this is malformed".
_FORBIDDEN_CODES = {"unauthorized_author"}


def crypto_failure(error: CryptoError) -> ServiceError:
    cls = Forbidden if error.code in _FORBIDDEN_CODES else ServiceError
    return cls(error.code, error.message or error.code.replace("_", " "))


def locked_case(case_id: uuid.UUID) -> Case:
    """The case row under lock: serialises log commits and sequence numbers per case."""
    case = Case.objects.select_for_update().filter(pk=case_id).first()
    if case is None:
        raise NotFound("no_case", "No such case.")
    return case

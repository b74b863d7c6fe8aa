"""Which open sockets may stay open as far as their sessions go, for many sockets in a
fixed number of queries: the sweep (collab.consumers.sweep) asks this for every socket
of a process at once, so checking 10,000 idle sockets costs a handful of queries, not
five for each. The rule is the handshake's (ws_auth.socket_verdict), read afresh."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterable
from importlib import import_module
from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.backends.base import SessionBase
from django.db import DatabaseError
from django.utils import timezone
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.models import Device
from django_otp.plugins.otp_totp.models import TOTPDevice

from collab.accounts import policy
from collab.accounts.models import User
from collab.accounts.ws_auth import socket_verdict

log = logging.getLogger("collab.security")

# (session key, user id): a socket's session and the user it was opened as.
SessionOf = tuple[str, uuid.UUID]


def sessions_still_valid(pairs: Iterable[SessionOf]) -> set[SessionOf]:
    """The pairs whose session still exists, unexpired, signed in as that user (an
    active one), not idle or past its lifetime, with its second factor still passed."""
    wanted = set(pairs)
    data = _session_data({key for key, _ in wanted})
    users = User.objects.in_bulk({user_id for _, user_id in wanted})
    facts = _second_factor_facts(data.values(), users.keys())
    valid: set[SessionOf] = set()
    for key, user_id in wanted:
        session = data.get(key)
        user = users.get(user_id)
        if session is None or user is None or session.get(SESSION_KEY) != str(user_id):
            continue
        try:
            verdict = socket_verdict(user, session, facts)
        except DatabaseError:
            raise
        except Exception:  # one malformed session refuses its own sockets, no others
            log.exception("session check failed on a malformed session")
            continue
        if verdict is None:
            valid.add((key, user_id))
    return valid


def _session_data(keys: set[str]) -> dict[str, dict[str, Any]]:
    """Decoded data of the sessions that exist and have not expired, by key."""
    store: type[SessionBase] = import_module(settings.SESSION_ENGINE).SessionStore
    get_model = getattr(store, "get_model_class", None)
    if get_model is not None:  # database-backed engines: one query for all
        rows = get_model().objects.filter(
            session_key__in=keys, expire_date__gt=timezone.now()
        ).values_list("session_key", "session_data")
        decoder = store()
        return {key: decoder.decode(raw) for key, raw in rows}
    found: dict[str, dict[str, Any]] = {}
    for key in keys:  # other engines: one store read each
        session = store(session_key=key)
        if session.exists(key):
            found[key] = session.load()
    return found


def _second_factor_facts(
    sessions: Iterable[dict[str, Any]], user_ids: Iterable[uuid.UUID]
) -> policy.SecondFactorFacts:
    """The OTP devices the sessions name (one query per device kind) and the users with
    a confirmed TOTP device (one query)."""
    wanted: dict[str, set[str]] = {}
    for session in sessions:
        persistent_id = session.get(DEVICE_ID_SESSION_KEY)
        if isinstance(persistent_id, str) and "/" in persistent_id:
            label, _, pk = persistent_id.rpartition("/")
            wanted.setdefault(label, set()).add(pk)
    devices: dict[str, Device] = {}
    for label, pks in wanted.items():
        with contextlib.suppress(LookupError, ValueError):  # not a device, or a bad id
            model = apps.get_model(label)
            if issubclass(model, Device):
                for device in model.objects.filter(pk__in=pks):
                    devices[device.persistent_id] = device
    totp_users = frozenset(
        TOTPDevice.objects.filter(user_id__in=list(user_ids), confirmed=True)
        .values_list("user_id", flat=True)
    )
    return policy.SecondFactorFacts(devices, totp_users)

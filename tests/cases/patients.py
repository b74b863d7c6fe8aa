"""Test helpers: a patient who joins through an invitation link, as a browser would."""

from __future__ import annotations

from typing import Any

from django.test import Client

from collab.accounts.models import User
from collab.client.case_state import CaseState
from collab.client.keys import DeviceKeys, Identity
from tests.support.actor import Actor
from tests.support.users import PASSWORD


def invite(provider: Actor, state: CaseState) -> str:
    """Create an invitation as ``provider``; returns the raw token from the link."""
    response = provider.call("POST", f"/api/cases/{state.case_id}/invitations")
    assert response.status_code == 201, response.content
    return str(response.json()["link"]).rstrip("/").rsplit("/", 1)[1]


def sign_up(token: str, username: str = "pat", password: str = PASSWORD) -> tuple[Client, Any]:
    browser = Client()
    response = browser.post(
        f"/invite/{token}/",
        {
            "username": username,
            "display_name": username.title(),
            "password1": password,
            "password2": password,
        },
    )
    return browser, response


def patient_actor(user: User, browser: Client) -> Actor:
    """An Actor around an account created by the sign-up page (no TOTP)."""
    actor = Actor.__new__(Actor)
    actor.user = user
    actor.client = browser
    actor.identity = Identity.generate(user.pk)
    actor.device = DeviceKeys.generate(user.pk)
    actor.cert = actor.identity.certify(actor.device)
    actor.cases = {}
    actor.http = None
    return actor.register()


def invited_patient(provider: Actor, state: CaseState, username: str = "pat") -> Actor:
    browser, response = sign_up(invite(provider, state), username)
    assert response.status_code == 302, getattr(response, "content", b"")[:500]
    return patient_actor(User.objects.get(username=username), browser)

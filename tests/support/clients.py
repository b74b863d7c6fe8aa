"""SDK clients signed in to a live server, and the operator's tricks played on them.

The malicious server is played by writing to the database directly (the test process
shares the database with the daphne processes it started)."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

from collab.accounts.models import Device, IdentityKey, User
from collab.client import cli
from collab.client.keys import DeviceKeys, Identity
from collab.client.keystore import Keystore
from collab.client.sdk import CollabClient
from tests.support.users import PASSWORD, make_user, totp_code

PASS = "keystore passphrase for tests"


def signed_in(url: str, user: User, home: Path, offset_steps: int = 0) -> CollabClient:
    """A client with its own keystore (``home/<username>``), signed in through the
    login and OTP pages."""
    store = Keystore.create(home / user.username / "keystore.json", PASS)
    client = CollabClient(url, keystore=store)
    client.login(user.username, PASSWORD, totp_code(user, offset_steps=offset_steps))
    return client


def new_member(url: str, username: str, home: Path, specialty: str = "",
               role: str = "provider") -> CollabClient:
    client = signed_in(url, make_user(username, role=role, specialty=specialty), home)
    client.init(device_name=f"{username}-laptop")
    return client


def reload(client: CollabClient) -> CollabClient:
    """The same keystore opened again (what the next CLI run sees)."""
    assert client.store is not None
    return CollabClient(keystore=Keystore.load(client.store.path, PASS))


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


class IdentitySwap:
    """The operator replaces a user's registered identity key with one of its own and
    serves only a device certified by it (the user's real devices look revoked)."""

    def __init__(self, user_id: uuid.UUID) -> None:
        self.user_id = user_id
        self.identity = Identity.generate(user_id)
        self.device = DeviceKeys.generate(user_id)
        row = IdentityKey.objects.get(user_id=user_id)
        self.honest_uik = bytes(row.uik_pub)
        self.hidden = list(Device.objects.filter(user_id=user_id, revoked_at__isnull=True)
                           .values_list("pk", flat=True))

    def apply(self) -> IdentitySwap:
        from django.utils import timezone

        IdentityKey.objects.filter(user_id=self.user_id).update(
            uik_pub=self.identity.uik_pub)
        Device.objects.filter(pk__in=self.hidden).update(revoked_at=timezone.now())
        cert = self.identity.certify(self.device)
        Device.objects.create(
            id=self.device.device_id, user_id=self.user_id, name="operator",
            dsk_pub=cert.dsk_pub, dxk_pub=cert.dxk_pub, not_before_ms=cert.not_before_ms,
            cert_sig=cert.cert_sig,
        )
        return self

    def undo(self) -> None:
        IdentityKey.objects.filter(user_id=self.user_id).update(uik_pub=self.honest_uik)
        Device.objects.filter(pk=self.device.device_id).delete()
        Device.objects.filter(pk__in=self.hidden).update(revoked_at=None)


def invitation_token(link: str) -> str:
    """The server token of an invitation link (the part before any fragment)."""
    return link.split("#", 1)[0].rstrip("/").rsplit("/", 1)[1]


def invited_patient(url: str, link: str, username: str, home: Path) -> CollabClient:
    """A patient who signs up through the invitation page (as a browser would, here with
    Django's test client on the shared database), then registers an identity and a
    device with the SDK using that session."""
    from django.test import Client

    browser = Client()
    response = browser.post(f"/invite/{invitation_token(link)}/", {
        "username": username, "display_name": username.title(),
        "password1": PASSWORD, "password2": PASSWORD,
    })
    assert response.status_code == 302, response.content[:500]
    store = Keystore.create(home / username / "keystore.json", PASS)
    store.state.server, store.state.username = url, username
    store.state.session = browser.cookies["sessionid"].value
    client = CollabClient(keystore=store)
    client.init(device_name=f"{username}-phone")
    return client

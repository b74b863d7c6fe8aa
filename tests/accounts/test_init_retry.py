"""The first device's init, interrupted after it registered the identity key, goes on with
that identity when called again, instead of leaving the account with an identity and no
backup (``has_identity`` on every retry)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from collab.accounts.models import Device, IdentityBackup, IdentityKey
from collab.client.errors import UnreachableError, UsageError
from collab.client.sdk import CollabClient
from tests.support.clients import signed_in
from tests.support.live import daphne_servers
from tests.support.users import PASSWORD, make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


@pytest.fixture(scope="module")
def server(django_db_setup: Any, django_db_blocker: Any) -> Iterator[str]:
    with django_db_blocker.unblock(), daphne_servers(1) as urls:
        yield urls[0]


def failing_backup_put(client: CollabClient, *, stored: bool) -> Callable[[], None]:
    """The first identity-backup upload fails: before reaching the server, or (``stored``)
    after the server stored it, the answer lost."""
    real = client.call
    failed = False

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        nonlocal failed
        if method == "PUT" and path == "/api/identity/backup" and not failed:
            failed = True
            if stored:
                real(method, path, body)
            raise UnreachableError("connection lost")
        return real(method, path, body)

    client.call = call  # type: ignore[method-assign]

    def undo() -> None:
        client.call = real  # type: ignore[method-assign]

    return undo


def recovered(server: str, username: str, home: Path, recovery: str) -> CollabClient:
    from collab.accounts.models import User

    other = signed_in(server, User.objects.get(username=username), home, offset_steps=1)
    other.recover(recovery, device_name="second")
    return other


def test_a_retried_init_goes_on_with_the_registered_identity(server: str, tmp_path: Path) -> None:
    user = make_user("pcp")
    client = signed_in(server, user, tmp_path / "one")
    failing_backup_put(client, stored=False)
    with pytest.raises(UnreachableError):
        client.init(device_name="first")
    registered = bytes(IdentityKey.objects.get(user=user).uik_pub)
    assert not IdentityBackup.objects.filter(user=user).exists()

    recovery = client.init(device_name="first")  # used to fail with has_identity

    assert client.identity.uik_pub == registered
    assert bytes(IdentityKey.objects.get(user=user).uik_pub) == registered
    assert Device.objects.filter(user=user, revoked_at__isnull=True).count() == 1
    # The backup stored is the registered identity's, under the recovery key shown.
    other = recovered(server, "pcp", tmp_path / "two", recovery)
    assert other.identity.uik_pub == registered


def test_a_backup_stored_with_its_answer_lost_is_replaced_only_with_the_password(
    server: str, tmp_path: Path
) -> None:
    user = make_user("derm", specialty="Dermatology")
    client = signed_in(server, user, tmp_path / "one")
    failing_backup_put(client, stored=True)
    with pytest.raises(UnreachableError):
        client.init(device_name="first")
    lost = bytes(IdentityBackup.objects.get(user=user).ciphertext)
    with pytest.raises(UsageError) as refused:
        client.init(device_name="first")
    assert refused.value.code == "init_incomplete"
    assert bytes(IdentityBackup.objects.get(user=user).ciphertext) == lost
    assert not Device.objects.filter(user=user).exists()

    recovery = client.init(device_name="first", password=PASSWORD)

    assert bytes(IdentityBackup.objects.get(user=user).ciphertext) != lost
    other = recovered(server, "derm", tmp_path / "two", recovery)
    assert other.identity.uik_pub == client.identity.uik_pub


def test_another_keystore_still_gets_has_identity(server: str, tmp_path: Path) -> None:
    """Only the keystore holding the registered key's secret may go on; another one is
    told to recover, as before."""
    user = make_user("neuro", specialty="Neurology")
    first = signed_in(server, user, tmp_path / "one")
    first.init(device_name="first")
    second = signed_in(server, user, tmp_path / "two", offset_steps=1)
    with pytest.raises(UsageError) as refused:
        second.init(device_name="second")
    assert refused.value.code == "has_identity"

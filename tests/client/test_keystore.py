"""The local keystore: sealed under the passphrase, 0600, refused when exposed."""

from __future__ import annotations

import json
import stat
import uuid
from pathlib import Path

import nacl.secret
import nacl.utils
import pytest

from collab.client.errors import AuthError, KeystoreError, UsageError
from collab.client.keys import (
    DeviceKeys,
    Identity,
    format_recovery_key,
    new_recovery_key,
    open_identity_backup,
    parse_recovery_key,
    seal_identity_backup,
)
from collab.client.keystore import CaseMemo, Keystore
from collab.crypto.errors import CryptoError
from collab.crypto.wire import b64e

PASS = "correct horse battery staple"


def filled(path: Path) -> tuple[Keystore, Identity, DeviceKeys]:
    store = Keystore.create(path, PASS)
    user_id = uuid.uuid4()
    identity = Identity.generate(user_id)
    device = DeviceKeys.generate(user_id)
    st = store.state
    st.server, st.username, st.user_id, st.session = "http://h", "pcp", user_id, "s3cr3t-session"
    st.identity, st.device, st.cert = identity, device, identity.certify(device)
    st.cases["c1"] = CaseMemo(2, b"\x01" * 64, 7, 9)
    store.save()
    return store, identity, device


def test_round_trip_keeps_keys_session_and_case_memory(tmp_path: Path) -> None:
    path = tmp_path / "home" / "keystore.json"
    _, identity, device = filled(path)
    again = Keystore.load(path, PASS).state
    assert again.identity == identity and again.device == device
    assert again.session == "s3cr3t-session" and again.username == "pcp"
    assert again.cases["c1"] == CaseMemo(2, b"\x01" * 64, 7, 9)


def test_file_is_0600_and_holds_no_secret_in_clear(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    _, identity, device = filled(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    outer = json.loads(text)
    assert outer["kdf"] == "argon2id" and outer["format"] == "collab-keystore"
    for secret in (identity.uik_seed, device.dsk_seed, device.dxk_secret):
        assert b64e(secret) not in text
    assert "s3cr3t-session" not in text and "pcp" not in text


def test_wrong_passphrase_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    filled(path)
    with pytest.raises(AuthError) as caught:
        Keystore.load(path, PASS + "!")
    assert caught.value.code == "wrong_passphrase"


def test_keystore_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    filled(path)
    path.chmod(0o644)
    with pytest.raises(KeystoreError) as caught:
        Keystore.load(path, PASS)
    assert caught.value.code == "keystore_permissions"


def test_tampered_keystore_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    filled(path)
    outer = json.loads(path.read_text())
    outer["ciphertext"] = outer["ciphertext"][:-8] + "AAAAAAA="
    path.write_text(json.dumps(outer))
    with pytest.raises((AuthError, KeystoreError)):
        Keystore.load(path, PASS)
    path.write_text("{not json")
    with pytest.raises(KeystoreError) as caught:
        Keystore.load(path, PASS)
    assert caught.value.code == "keystore_damaged"


def test_missing_keystore_weak_passphrase_and_existing_file(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError) as caught:
        Keystore.load(tmp_path / "none.json", PASS)
    assert caught.value.code == "no_keystore"
    with pytest.raises(KeystoreError):
        Keystore.create(tmp_path / "k.json", "short")
    filled(tmp_path / "k.json")
    with pytest.raises(KeystoreError):
        Keystore.create(tmp_path / "k.json", PASS)


def test_resave_keeps_0600_and_changes_nonce(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    store, _, _ = filled(path)
    before = json.loads(path.read_text())["nonce"]
    store.save()
    assert json.loads(path.read_text())["nonce"] != before
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_recovery_key_opens_the_identity_backup_and_nothing_else_does() -> None:
    identity = Identity.generate(uuid.uuid4())
    key = new_recovery_key()
    text = format_recovery_key(key)
    assert len(text.split("-")) == 13 and all(len(g) <= 4 for g in text.split("-"))
    backup = seal_identity_backup(identity, key)
    assert identity.uik_seed not in backup
    typed = " " + text.lower().replace("-", " ") + " "
    assert open_identity_backup(backup, parse_recovery_key(typed), identity.user_id) == identity
    with pytest.raises(AuthError) as caught:
        open_identity_backup(backup, new_recovery_key(), identity.user_id)
    assert caught.value.code == "wrong_recovery_key"
    with pytest.raises(CryptoError):
        open_identity_backup(backup, key, uuid.uuid4())
    with pytest.raises(UsageError):
        parse_recovery_key("ABCD-EFGH")


def test_pins_and_their_version_survive_a_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    store, _, _ = filled(path)
    bob, case = uuid.uuid4(), uuid.uuid4()
    pins = store.state.pins
    pins.observe(bob, b"\x01" * 32, case, 1000)
    pins.observe(bob, b"\x02" * 32, case, 2000)
    store.state.pins_version = 7
    store.save()
    again = Keystore.load(path, PASS).state
    assert again.pins == pins and again.pins_version == 7
    assert again.pins.state(bob, b"\x02" * 32) == "changed"


def test_keystore_written_before_pinning_loads_with_an_empty_pin_book(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    store, identity, _ = filled(path)
    old = store.state.to_json()
    del old["pins"], old["pins_version"]
    outer = json.loads(path.read_text())
    nonce = nacl.utils.random(24)
    outer["nonce"] = b64e(nonce)
    outer["ciphertext"] = b64e(
        nacl.secret.SecretBox(store._key).encrypt(json.dumps(old).encode(), nonce).ciphertext)
    path.write_text(json.dumps(outer))
    again = Keystore.load(path, PASS).state
    assert again.identity == identity and again.cases["c1"].sender_seq == 7
    assert again.pins.records == {} and again.pins_version == 0

"""The provider directory's query: input the database cannot hold is answered, not a 500."""

from __future__ import annotations

import pytest

from tests.support.users import make_user, verified_client


@pytest.mark.django_db
def test_a_query_with_a_nul_byte_is_searched_without_it() -> None:
    """PostgreSQL refuses NUL in text: the view drops it instead of failing (found by
    schemathesis, tests/schema/test_schemathesis_live.py)."""
    make_user("nul-colleague", role="provider", specialty="Dermatology")
    viewer = verified_client(make_user("nul-viewer", role="provider"))
    response = viewer.get("/api/directory", {"q": "Derm\x00atology"})
    assert response.status_code == 200
    assert [u["display_name"] for u in response.json()["users"]] == ["Nul-Colleague"]
    only_nul = viewer.get("/api/directory", {"q": "\x00\x00\x00"})
    assert only_nul.status_code == 200
    assert only_nul.json() == {"users": []}

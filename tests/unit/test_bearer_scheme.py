"""A key sent in ``Authorization`` without ``Bearer `` is still refused, and the 401 says why
(it said "You didn't provide an API key", which sent a tester looking for a lost header)."""

from __future__ import annotations

import pytest

from switchyard.errors import AuthenticationFailed
from switchyard.ingress.edge import presented_key

pytestmark = pytest.mark.unit

KEY = "sk-sy-" + "a1" * 20


def _refusal(authorization: str) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as refused:
        presented_key(authorization, None, None)
    assert (refused.value.status, refused.value.code) == (401, "missing_api_key")
    assert KEY not in refused.value.message  # never echoed
    assert "Authorization: Bearer sk-sy-..." in refused.value.message
    return refused.value


def test_a_bare_key_is_refused_saying_the_bearer_scheme_is_missing() -> None:
    said = _refusal(KEY).message
    assert "sent in the Authorization header without the `Bearer ` scheme" in said
    assert "didn't provide" not in said


def test_another_scheme_is_named_and_refused() -> None:
    assert "uses the `Basic` scheme" in _refusal("Basic dXNlcjpwYXNz").message
    # A value whose first word is not shaped like a scheme is not echoed.
    said = _refusal(f"{KEY} trailing").message
    assert "holds no `Bearer` token" in said


def test_a_bearer_key_and_the_other_headers_still_present_it() -> None:
    assert presented_key(f"Bearer {KEY}", None, None) == KEY
    assert presented_key(f"bearer  {KEY} ", None, None) == KEY
    assert presented_key(KEY, None, "sk-other") == "sk-other"  # x-api-key: Anthropic's clients
    assert presented_key(None, "sk-azure", None) == "sk-azure"
    assert presented_key(None, None, None) is None
    assert presented_key("", None, None) is None
    assert "didn't provide an API key" in _refusal("Bearer ").message

"""Keys and tokens: failed-authentication limits, lookups by digest only, constant-time tokens."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from switchyard.admin.token import AdminAuth
from switchyard.errors import AuthenticationFailed, RateLimited
from switchyard.ingress.guard import FailedAuthGuard
from switchyard.ingress.keyring import KeyRing
from switchyard.schemas.keys import ClientKey

pytestmark = pytest.mark.unit

BAD = AuthenticationFailed("Incorrect API key provided.")
MISSING = AuthenticationFailed("no key", code="missing_api_key")


def test_repeated_bad_keys_from_one_address_get_429_until_the_window_ends() -> None:
    guard = FailedAuthGuard(limit=3, window_s=60)
    for _ in range(3):
        guard.check("10.0.0.1", now=100)
        guard.failed("10.0.0.1", BAD, now=100)
    with pytest.raises(RateLimited) as caught:
        guard.check("10.0.0.1", now=110)
    assert caught.value.code == "too_many_failed_authentications"
    assert caught.value.retry_after == 50
    guard.check("10.0.0.2", now=110)  # another address is not affected
    guard.check("10.0.0.1", now=160)  # the window passed
    assert not guard


def test_missing_keys_do_not_count_and_the_table_is_bounded() -> None:
    guard = FailedAuthGuard(limit=1, window_s=60, max_addresses=100)
    guard.failed("a", MISSING, now=0)
    guard.check("a", now=1)
    assert not guard  # a clean edge consults nothing for valid keys
    for i in range(1000):
        guard.failed(f"addr-{i}", BAD, now=i)
    assert len(guard._seen) == 100


def test_only_unknown_keys_count() -> None:
    """A revoked or expired key is a known record: its client keeps reading why (401), and it
    does not lock out the other clients behind the same address (an explorer's revoked app,
    retrying, locked every app on its address out of the edge)."""
    guard = FailedAuthGuard(limit=2, window_s=60)
    for _ in range(10):
        guard.failed("nat", AuthenticationFailed("revoked", code="api_key_revoked"), now=0)
        guard.failed("nat", AuthenticationFailed("expired", code="api_key_expired"), now=0)
    guard.check("nat", now=1)
    assert not guard
    guard.failed("nat", BAD, now=2)
    guard.failed("nat", BAD, now=2)
    with pytest.raises(RateLimited):
        guard.check("nat", now=3)


class _Spy(dict[str, Any]):
    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.append(key)
        return super().get(key, default)


def test_client_keys_are_looked_up_by_digest_only() -> None:
    """Timing: the key ring is a dict keyed by SHA-256 hex digests, and a presented key is
    only ever hashed and looked up by its digest. How long a lookup takes depends on the
    digest of the caller's own guess, which reveals nothing about a valid key's digest unless
    SHA-256 can be inverted; the raw key is never compared with anything."""
    ring = KeyRing.__new__(KeyRing)
    spy = _Spy()
    ring._by_hash = spy
    secret = "sk-sy-" + "x" * 43
    spy[hashlib.sha256(secret.encode()).hexdigest()] = ClientKey(id="k1", hash="h", name="n")
    assert ring.authenticate(secret).id == "k1"
    with pytest.raises(AuthenticationFailed):
        ring.authenticate("sk-sy-guess")
    assert all(len(k) == 64 and int(k, 16) >= 0 for k in spy.asked)
    assert secret not in spy.asked


def test_a_missing_key_names_both_headers_a_key_is_taken_from() -> None:
    """Anthropic's clients send ``x-api-key``: a message naming only ``Authorization`` sent
    them looking for a header their SDK has no setting for."""
    ring = KeyRing.__new__(KeyRing)
    ring._by_hash = {}
    with pytest.raises(AuthenticationFailed) as missing:
        ring.authenticate(None)
    assert missing.value.code == "missing_api_key"
    assert "Authorization: Bearer" in missing.value.message
    assert "x-api-key" in missing.value.message


def test_admin_token_is_compared_in_constant_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hmac

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    path = tmp_path / "admin-token"
    path.write_text("sy-admin-right-" + "r" * 32 + "\n")
    auth = AdminAuth(path)
    auth.check("sy-admin-right-" + "r" * 32)
    with pytest.raises(AuthenticationFailed):
        auth.check("sy-admin-wrong")
    # Every comparison went through compare_digest, on fixed-length SHA-256 digests: the
    # right token's once, the wrong one's with the admin digest and with the read-only one's
    # place (compared even without a read-only token: the time says nothing about it).
    assert len(calls) == 3
    assert all(len(a) == len(b) == 32 for a, b in calls)

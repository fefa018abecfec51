"""The admin token file: a short token stops the gateway, a file others may read is warned
about, and wrong tokens on the API are counted per address with the sign-in's guard."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from switchyard.admin.token import MIN_TOKEN_CHARS, AdminAuth
from switchyard.admin.ui.signin_guard import LIMIT, SigninGuard
from switchyard.errors import AuthenticationFailed, ConfigError, RateLimited

GOOD = "sy-admin-" + "k" * 43


def _token_file(tmp_path: Path, token: str, mode: int = 0o600) -> Path:
    path = tmp_path / "admin-token"
    path.write_text(token + "\n", encoding="utf-8")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("token", ["admin", "x", "k" * (MIN_TOKEN_CHARS - 1)])
def test_a_short_token_is_refused_naming_the_file_and_how_to_make_one(
    tmp_path: Path, token: str
) -> None:
    """`admin` and `x` were accepted by the API and the sign-in form without a word."""
    path = _token_file(tmp_path, token)
    with pytest.raises(ConfigError) as caught:
        AdminAuth(path)
    text = str(caught.value)
    assert str(path) in text
    assert f"{len(token)} characters" in text
    assert "secrets.token_urlsafe(32)" in text


def test_a_long_token_is_taken(tmp_path: Path) -> None:
    auth = AdminAuth(_token_file(tmp_path, "k" * MIN_TOKEN_CHARS))
    auth.check("k" * MIN_TOKEN_CHARS)


def test_a_token_file_others_may_read_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "switchyard.admin"):
        AdminAuth(_token_file(tmp_path, GOOD, 0o600))
    assert not caplog.records
    with caplog.at_level(logging.WARNING, "switchyard.admin"):
        AdminAuth(_token_file(tmp_path, GOOD, 0o644))
    [record] = caplog.records
    assert "readable by other users (mode 0644)" in record.getMessage()
    assert GOOD not in record.getMessage()


def test_wrong_api_tokens_from_one_address_get_429_and_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """243 wrong bearer tokens at ~110/s were 243 401s, with no line in any log."""
    guard = SigninGuard()
    auth = AdminAuth(_token_file(tmp_path, GOOD), guard=guard)
    with caplog.at_level(logging.WARNING, "switchyard.admin"):
        for i in range(LIMIT):
            with pytest.raises(AuthenticationFailed):
                auth.check_from(f"sy-admin-guess-{i}", lambda: "203.0.113.7")
        for i in range(5):
            with pytest.raises(RateLimited) as refused:
                auth.check_from(f"sy-admin-guess-more-{i}", lambda: "203.0.113.7")
            assert refused.value.code == "too_many_failed_authentications"
            assert refused.value.status == 429
            assert refused.value.retry_after is not None
            assert refused.value.retry_after > 0
    [warning] = [r.getMessage() for r in caplog.records]
    assert "203.0.113.7" in warning
    assert "guess" not in warning
    # The right token still passes from the blocked address (an address may be shared) ...
    auth.check_from(GOOD, lambda: "203.0.113.7")
    # ... and a missing token is not a guess: still a plain 401.
    with pytest.raises(AuthenticationFailed):
        auth.check_from(None, lambda: "198.51.100.1")
    assert guard.wait_s("198.51.100.1") == 0
    # The count is the sign-in's: the address waits there too.
    assert guard.wait_s("203.0.113.7") > 0


def test_switchyard_up_refuses_a_short_token_before_starting_anything(tmp_path: Path) -> None:
    from switchyard.config import load_settings
    from switchyard.stack.local import prepare_home

    settings = load_settings(None, overrides={"home": str(tmp_path)})
    _token_file(tmp_path, "admin")
    with pytest.raises(ConfigError, match="admin-token is 5 characters"):
        prepare_home(settings)

"""The admin token file: a short token stops the gateway, a token shorter than advised and a
file others may read are warned about, and wrong tokens on the API are counted per address
with the sign-in's guard."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from switchyard.admin.token import ADVISED_TOKEN_CHARS, MIN_TOKEN_CHARS, AdminAuth
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


def test_a_long_token_is_taken_without_a_word(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "switchyard.admin"):
        auth = AdminAuth(_token_file(tmp_path, "k" * ADVISED_TOKEN_CHARS))
    auth.check("k" * ADVISED_TOKEN_CHARS)
    assert not caplog.records


# `openssl rand -base64 16` (128 bits), `openssl rand -hex 8`, and the shortest taken.
@pytest.mark.parametrize("token", ["q3Jx9v0T1mZ8bW2yK5nR7a==", "0f3a9c1d7e2b4a68", "k" * 16])
def test_a_128_bit_token_is_taken_with_one_warning_not_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, token: str
) -> None:
    """A 24-character `openssl rand -base64 16` token was refused at start (32 at least):
    a gateway that served with it stopped after an upgrade."""
    path = _token_file(tmp_path, token)
    with caplog.at_level(logging.WARNING, "switchyard.admin"):
        auth = AdminAuth(path)
    auth.check(token)
    [record] = caplog.records
    text = record.getMessage()
    assert f"{path} is {len(token)} characters" in text
    assert f"{ADVISED_TOKEN_CHARS} or more random ones are advised" in text
    assert "secrets.token_urlsafe(32)" in text
    assert token not in text


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
            # (a block's count or a full table may be why: not this address's alone)
            assert "from this address or its network" in refused.value.message
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
    _token_file(tmp_path, "q3Jx9v0T1mZ8bW2yK5nR7a==")  # 128 random bits: taken
    prepare_home(settings)

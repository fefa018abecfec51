"""The read-only admin token: loaded by the admin token's rules, never the admin token itself,
a role of its own, wrong ones counted with the same guard."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from switchyard.admin.token import AdminAuth, Role
from switchyard.admin.ui.signin_guard import LIMIT, SigninGuard
from switchyard.errors import AuthenticationFailed, ConfigError, RateLimited

ADMIN = "sy-admin-" + "a" * 43
READ = "sy-read-" + "r" * 43


def _file(path: Path, token: str, mode: int = 0o600) -> Path:
    path.write_text(token + "\n", encoding="utf-8")
    path.chmod(mode)
    return path


def _auth(tmp_path: Path, read: str | None = READ, guard: SigninGuard | None = None) -> AdminAuth:
    admin = _file(tmp_path / "admin-token", ADMIN)
    read_only = tmp_path / "admin-readonly-token"
    if read is not None:
        _file(read_only, read)
    return AdminAuth(admin, guard=guard, read_only=read_only)


def test_each_token_has_its_role(tmp_path: Path) -> None:
    """There was one token, and it could do everything."""
    auth = _auth(tmp_path)
    assert auth.check(ADMIN) is Role.ADMIN
    assert auth.check(READ) is Role.READ_ONLY
    with pytest.raises(AuthenticationFailed) as caught:
        auth.check(READ + "x")
    assert caught.value.code == "invalid_admin_token"


def test_without_the_file_there_is_no_read_only_access(tmp_path: Path) -> None:
    auth = _auth(tmp_path, read=None)
    assert auth.check(ADMIN) is Role.ADMIN
    with pytest.raises(AuthenticationFailed):
        auth.check(READ)
    empty = _auth(tmp_path, read="")  # an empty file: none either
    with pytest.raises(AuthenticationFailed):
        empty.check("")


@pytest.mark.parametrize("token", ["x", "read-only", "r" * 15])
def test_a_short_read_only_token_is_refused_naming_its_setting(tmp_path: Path, token: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _auth(tmp_path, read=token)
    text = str(caught.value)
    assert "admin.readonly_token_file" in text
    assert f"read-only admin token in {tmp_path / 'admin-readonly-token'}" in text
    assert f"{len(token)} characters" in text
    assert 'print("sy-read-" + secrets.token_urlsafe(32))' in text  # how to make one


def test_a_16_to_31_character_read_only_token_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = "r" * 20
    with caplog.at_level(logging.WARNING, "switchyard.admin"):
        auth = _auth(tmp_path, read=token)
    assert auth.check(token) is Role.READ_ONLY
    [record] = caplog.records
    assert "read-only admin token" in record.getMessage()
    assert "20 characters" in record.getMessage()
    assert token not in record.getMessage()


def test_a_read_only_token_file_others_may_read_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    admin = _file(tmp_path / "admin-token", ADMIN)
    read_only = _file(tmp_path / "admin-readonly-token", READ, mode=0o644)
    with caplog.at_level(logging.WARNING, "switchyard.admin"):
        AdminAuth(admin, read_only=read_only)
    [record] = caplog.records
    assert "read-only admin token file" in record.getMessage()
    assert READ not in record.getMessage()


def test_the_admin_token_is_refused_as_the_read_only_one(tmp_path: Path) -> None:
    """Who held it would be signed in as read-only with the admin's token, or the other way."""
    with pytest.raises(ConfigError, match="is the admin token"):
        _auth(tmp_path, read=ADMIN)


def test_wrong_tokens_count_with_the_guard_and_the_read_only_one_still_works(
    tmp_path: Path,
) -> None:
    guard = SigninGuard()
    auth = _auth(tmp_path, guard=guard)
    for i in range(LIMIT):
        with pytest.raises(AuthenticationFailed):
            auth.check_from(f"{READ}{i}", lambda: "10.0.0.7")
    with pytest.raises(RateLimited):
        auth.check_from(READ + "late", lambda: "10.0.0.7")
    # The right read-only token passes from the blocked address (many people share one).
    assert auth.check_from(READ, lambda: "10.0.0.7") is Role.READ_ONLY

"""What a read-only admin caller is refused, and the read-only token file ``switchyard up``
writes and names."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchyard.admin.access import CODE, read_only_refusal
from switchyard.admin.token import READ_ONLY_PREFIX
from switchyard.stack.commands import summary
from switchyard.stack.home import READONLY_TOKEN_PREFIX, StackHome, ensure_admin_token


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "post"])
def test_every_change_is_refused_naming_what_it_needed(method: str) -> None:
    refusal = read_only_refusal(method, "/admin/v1/keys/{key_id}")
    assert refusal is not None
    assert (refusal.status, refusal.code, refusal.type) == (403, CODE, "permission_error")
    assert f"{method.upper()} /admin/v1/keys/{{key_id}}" in refusal.message
    assert "needs the admin token" in refusal.message


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_reads_are_allowed(method: str) -> None:
    assert read_only_refusal(method, "/admin/v1/keys") is None


def test_up_writes_a_private_read_only_token_of_its_own_kind(tmp_path: Path) -> None:
    assert READONLY_TOKEN_PREFIX == READ_ONLY_PREFIX  # what the hint to make one says
    path = tmp_path / "admin-readonly-token"
    assert ensure_admin_token(path, READONLY_TOKEN_PREFIX)
    assert not ensure_admin_token(path, READONLY_TOKEN_PREFIX)  # kept once made
    token = path.read_text(encoding="utf-8").strip()
    assert token.startswith(READONLY_TOKEN_PREFIX)
    assert len(token) >= 32
    assert path.stat().st_mode & 0o777 == 0o600


def test_up_names_the_read_only_token_file(tmp_path: Path) -> None:
    home = StackHome(tmp_path)
    ensure_admin_token(tmp_path / "admin-token")
    ensure_admin_token(tmp_path / "admin-readonly-token", READONLY_TOKEN_PREFIX)
    urls = {
        "openai_api": "http://127.0.0.1:1/v1",
        "gateway_api": "http://127.0.0.1:2/v1",
        "gateway_docs": "http://127.0.0.1:2/docs",
        "admin_ui": "http://127.0.0.1:2/ui/",
    }
    text = summary(urls, None, [], home, 1.0)
    assert f"Read-only admin token (look, change nothing): {tmp_path / 'admin-readonly-token'}" in (
        text
    )
    assert (tmp_path / "admin-readonly-token").read_text(encoding="utf-8").strip() not in text

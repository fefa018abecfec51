"""The sign-in page names the admin token file of the stack it belongs to: it always said
`cat .switchyard/admin-token`, wrong for a stack run with `--home /some/dir`."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from switchyard.admin.plugin import AdminPlugin
from switchyard.config import load_settings

pytestmark = pytest.mark.unit


def _signin_page(env: dict[str, str]) -> str:
    app = FastAPI()
    for router in AdminPlugin(load_settings(env=env)).routers():
        app.include_router(router)
    page = TestClient(app).get("/ui/signin")
    assert page.status_code == 200
    return page.text


def test_the_sign_in_page_names_the_token_file_in_the_stacks_home(tmp_path: Path) -> None:
    home = tmp_path / "some dir"
    page = _signin_page({"SWITCHYARD_HOME": str(home)})
    assert f"<code>cat &#39;{home}/admin-token&#39;</code>" in page
    assert ".switchyard/admin-token" not in page


def test_a_token_file_set_in_the_settings_keeps_the_generic_hint(tmp_path: Path) -> None:
    page = _signin_page({"SWITCHYARD_ADMIN__TOKEN_FILE": "/run/creds/admin-token"})
    assert "Local stack: <code>cat .switchyard/admin-token</code>" in page
    assert "/run/creds" not in page

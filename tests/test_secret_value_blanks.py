"""A provider key with a blank around it, on the session stack: the admin API refuses it with
a 400 naming the problem (never the value), the web app strips it before storing.

A pasted ``" sk-...333  "`` was stored as typed by every way in, and every call with it then
failed 502 "provider refused the API key"; the only sign was a last-four ending in a blank.
"""

from __future__ import annotations

import httpx
import pytest

from tests.stacks import Stack

pytestmark = pytest.mark.integration

NAME = "blank-around"
KEY = "sk-blank-around-3333"


async def _shown(stack: Stack) -> tuple[int, str]:
    listed = (await stack.admin("GET", "/secrets")).json()["secrets"]
    info = next(s for s in listed if s["name"] == NAME)
    return info["version"], info["last4"]


async def test_the_admin_api_refuses_a_value_with_a_blank_around_it(stack: Stack) -> None:
    for op, path in (("PUT", f"/secrets/{NAME}"), ("POST", f"/secrets/{NAME}/rotate")):
        for value in (f" {KEY}  ", f"{KEY} ", f" {KEY}"):
            got = await stack.admin(op, path, {"value": value})
            assert got.status_code == 400, (op, got.text)
            error = got.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert "the value starts or ends with a space" in error["message"]
            assert "blank-around" not in got.text.replace(f"/secrets/{NAME}", "")
    listed = (await stack.admin("GET", "/secrets")).json()["secrets"]
    assert NAME not in [s["name"] for s in listed]  # nothing stored


async def test_the_web_app_stores_and_rotates_a_pasted_key_without_its_blanks(
    stack: Stack, signed_in: tuple[httpx.AsyncClient, str]
) -> None:
    web, csrf = signed_in
    try:
        stored = await web.post(
            "/ui/secrets", data={"csrf": csrf, "name": NAME, "value": f"  {KEY}  "}
        )
        assert stored.status_code == 303, stored.text
        assert await _shown(stack) == (1, "3333")
        rotated = await web.post(
            f"/ui/secrets/{NAME}/rotate", data={"csrf": csrf, "value": f"\t{KEY[:-1]}4 \r\n"}
        )
        assert rotated.status_code == 303, rotated.text
        assert await _shown(stack) == (2, "3334")
    finally:
        await stack.admin("DELETE", f"/secrets/{NAME}?force=true")

"""The batch runner's budget check while Valkey cannot be reached (nothing listens on its
port), and the error it gives for a spent budget."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from switchyard.config import RedisSettings, Settings
from switchyard.errors import ServiceUnavailable
from switchyard.limits.budgets import BudgetCheck, budget_exceeded, retry_after_s
from switchyard.schemas.keys import ClientKey
from switchyard.schemas.openai import error_body
from tests.support import free_port

pytestmark = pytest.mark.unit

KEY = ClientKey(id="key_x", hash="0" * 64, name="x", budget_usd=1.0)


def _check(tmp_path: Path, policy: str) -> BudgetCheck:
    redis = RedisSettings(
        url=f"redis://127.0.0.1:{free_port()}/0",
        password_dir=str(tmp_path),
        on_unavailable=policy,  # type: ignore[arg-type]
    )
    return BudgetCheck(Settings(home=str(tmp_path), redis=redis))


async def test_fail_closed_says_the_budget_cannot_be_checked(tmp_path: Path) -> None:
    check = _check(tmp_path, "fail_closed")
    try:
        with pytest.raises(ServiceUnavailable) as refused:
            await check.refusal(KEY)
    finally:
        await check.close()
    assert (refused.value.status, refused.value.code) == (503, "limits_unavailable")


async def test_fail_open_lets_the_work_through_unchecked(tmp_path: Path) -> None:
    check = _check(tmp_path, "fail_open")
    try:
        assert await check.refusal(KEY) is None
    finally:
        await check.close()


async def test_a_key_without_a_budget_never_asks_valkey(tmp_path: Path) -> None:
    check = _check(tmp_path, "fail_closed")  # nothing listens: asking would raise
    try:
        assert await check.refusal(ClientKey(id="key_y", hash="1" * 64, name="y")) is None
    finally:
        await check.close()


def test_the_budget_error_is_the_edges_429() -> None:
    err = budget_exceeded(KEY, retry_s=retry_after_s(float("inf"), 0.0), spent=1_250_000_000)
    assert (err.status, err.code, err.type, err.limit) == (
        429,
        "budget_exceeded",
        "insufficient_quota",
        "budget",
    )
    assert "budget of $1 per monthly period is used up (spent $1.25)" in err.message
    body = error_body(err)
    assert b'"code":"budget_exceeded"' in body
    assert retry_after_s(100.0, 40.0) == 60.0
    assert retry_after_s(100.0, 99.9) == 1.0  # at least a second


async def test_an_unreachable_valkey_is_logged_once_not_per_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch checks before every line: with Valkey down, the log says so once a while (under
    either policy), not once per line, and fail_closed says why the lines wait."""
    check = _check(tmp_path, "fail_closed")
    try:
        with caplog.at_level(logging.WARNING, logger="switchyard.limits"):
            for _ in range(5):
                with pytest.raises(ServiceUnavailable):
                    await check.refusal(KEY)
    finally:
        await check.close()
    said = [r.getMessage() for r in caplog.records if r.name == "switchyard.limits"]
    assert len(said) == 1, said
    assert "waits" in said[0]

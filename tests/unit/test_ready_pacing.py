"""An edge's readiness question is paced: one every READY_EVERY_S, whatever the answers.

A question that fails at once (no head subscribed: no responders) made the loop ask again at
once: a reviewer counted 244 questions in one probe's 2.5 s. The loop alone, with a stand-in
for the bus client whose questions fail or answer as each test says.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from switchyard.errors import ServiceUnavailable
from switchyard.ingress import edge

pytestmark = pytest.mark.unit


class Heads:
    """Answers each question after ``delay`` seconds, or fails it at once."""

    def __init__(self, *, answer_after: float | None) -> None:
        self.asked = 0
        self.answer_after = answer_after

    def envelope(self, timeout: float) -> dict[str, Any]:
        return {"timeout": timeout}

    async def request(self, subject: str, body: bytes, env: dict[str, Any]) -> None:
        self.asked += 1
        if self.answer_after is None:
            raise ServiceUnavailable("no head workers are available", code="no_workers")
        await asyncio.sleep(self.answer_after)


async def test_questions_that_fail_at_once_are_still_paced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edge, "READY_WITHIN_S", 1.0)
    heads = Heads(answer_after=None)
    failure = await edge._first_answer(heads)  # type: ignore[arg-type]
    assert failure == "no head workers are available"
    assert heads.asked <= 1.0 / edge.READY_EVERY_S + 1


async def test_a_slow_answer_to_an_early_question_still_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(edge, "READY_WITHIN_S", 2.0)
    heads = Heads(answer_after=0.6)
    assert await edge._first_answer(heads) is None  # type: ignore[arg-type]
    assert 2 <= heads.asked <= 4  # three asked by the time the first one's answer came

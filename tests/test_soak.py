"""The soak in its CI form: 40 s of mixed load (``python -m tests.soak`` runs the 10 minutes).

Same load as the full soak; the short run proves the harness and catches fast
leaks (a task or file descriptor per request shows within seconds at ~100 requests/s). It
samples every 2 s, not 10, and once more when the load ends: after the warm-up (a third),
about fourteen samples give a start and an end median of three each that share none (at 10 s
the two medians were of the same three samples and could not show growth). 40 s, not the 90
it was: the whole CI must finish in 30 minutes, and slow leaks are the 10-minute soak's.
"""

from __future__ import annotations

import os

import pytest

from tests.soak import report, soak

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(400)]

SECONDS = float(os.environ.get("SY_SOAK_SECONDS", "40"))


async def test_short_soak_shows_no_growth(tmp_path_factory: pytest.TempPathFactory) -> None:
    outcome = await soak(
        tmp_path_factory.mktemp("soak"), SECONDS, concurrency=6, sample_every_s=2.0
    )
    text = report(outcome, SECONDS)
    print(text)
    assert outcome.died == [], text
    assert sum(outcome.requests.values()) > SECONDS * 10, text
    assert {"stream", "cancelled", "error", "chat"} <= set(outcome.requests), text
    assert outcome.passed, text

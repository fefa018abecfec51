"""A limited key while Redis/Valkey cannot be reached (nothing listens on its port)."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchyard.config import RedisSettings, Settings
from switchyard.errors import ServiceUnavailable
from switchyard.limits.limiter import Limiter
from switchyard.schemas.keys import ClientKey
from tests.support import free_port

pytestmark = pytest.mark.unit


async def test_fail_closed_refusal_says_when_to_retry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    redis = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", password_dir=str(tmp_path))
    limiter = Limiter(Settings(home=str(tmp_path), redis=redis))
    key = ClientKey(id="key_x", hash="0" * 64, name="x", max_parallel=1)
    try:
        with pytest.raises(ServiceUnavailable) as refused:
            await limiter.admit(key, "r1", 1)
        with pytest.raises(ServiceUnavailable):
            await limiter.admit(key, "r2", 1)
    finally:
        await limiter.close()
    assert refused.value.code == "limits_unavailable"
    assert refused.value.status == 503
    # A few seconds: Valkey restarts or fails over in that time; clients should not hammer it.
    assert refused.value.retry_after is not None
    assert 1 <= refused.value.retry_after <= 5
    # The operator is told once (an explorer's Valkey outage left the edges' logs silent while
    # every limited key got 503s), not once per refused request.
    said = [r for r in caplog.records if "limits_unavailable" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].levelname == "WARNING"

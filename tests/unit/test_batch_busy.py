"""The Batch API's 409 for what waits on a batch that has not ended: retried by the SDKs only
when the batch ends within seconds (``finalizing``), refused for good otherwise."""

from __future__ import annotations

from typing import cast

import pytest

from switchyard.config import BatchSettings
from switchyard.ingress.batches import BatchApi
from switchyard.ingress.edge import Edge
from switchyard.schemas import batches as b

pytestmark = pytest.mark.unit


def test_only_a_finalizing_batchs_refusal_is_one_to_retry_soon() -> None:
    api = BatchApi(cast(Edge, None), BatchSettings())  # (busy reads no edge)
    finalizing = api.busy("busy", "finalizing")
    assert (finalizing.no_retry, finalizing.retry_after) == (False, api.progress_s)
    # A cancelling batch waits for the lines a provider answers (up to batch.line_timeout_s
    # and slack), indefinitely while no runner runs: not within a retry's seconds (a review).
    for status in b.ACTIVE - {"finalizing"}:
        refused = api.busy("busy", status)
        assert (refused.no_retry, refused.retry_after) == (True, None), status

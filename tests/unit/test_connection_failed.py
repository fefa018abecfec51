"""A provider connection that failed is said plainly, without aiohttp's misleading wording."""

from __future__ import annotations

import aiohttp
import pytest

from switchyard.errors import ProviderUnreachable
from switchyard.runtime.error_labels import error_class
from switchyard.workers.modelproxy.providers import upstream_errors as ue

pytestmark = pytest.mark.unit


def test_a_connection_closed_mid_answer_is_not_called_unreachable() -> None:
    """An on-call engineer's alert on ``provider_unreachable`` sent them to the network for a
    provider that was reached and hung up mid-answer: it has its own code."""
    cut = aiohttp.ClientPayloadError(
        "Response payload is not completed: <TransferEncodingError: 400, message='Not enough "
        "data to satisfy transfer length header.'>"
    )
    for exc in (cut, aiohttp.ServerDisconnectedError()):
        failure = ue.connection_failed("fakeoai", exc)
        assert isinstance(failure, ProviderUnreachable)  # still retried like one
        assert (failure.code, failure.retryable) == ("provider_disconnected", True)
        assert error_class(failure) == "provider_disconnected"  # the metrics' error_type
        assert failure.message == (
            "provider fakeoai closed the connection before its answer was complete"
        )


def test_other_connection_failures_name_their_kind() -> None:
    failure = ue.connection_failed("p", aiohttp.ClientOSError())
    assert failure.message == "provider p is unreachable: ClientOSError"
    assert failure.code == "provider_unreachable"

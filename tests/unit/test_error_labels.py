"""The error_type label is bounded: Switchyard's own codes only, never a provider's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from switchyard.errors import ApiError, InvalidRequest, ProviderError, ProviderRateLimited
from switchyard.limits import limiter
from switchyard.runtime.error_labels import OWN_CODES, error_class
from switchyard.workers.modelproxy.providers.redirects import REDIRECT_CODE
from switchyard.workers.modelproxy.providers.upstream_errors import from_status

pytestmark = pytest.mark.unit

SOURCE = Path(__file__).parents[2] / "switchyard"
_LITERAL = re.compile(r'\bcode\s*=\s*(?:[\w.]+\s+or\s+)?"([a-z_]+)"')


def test_every_code_the_source_sets_is_a_label_value() -> None:
    """A code added anywhere without adding it here would be reported as its class's code."""
    found = {m for path in SOURCE.rglob("*.py") for m in _LITERAL.findall(path.read_text())}
    found |= {code for _, code in limiter._REFUSALS.values()}
    found.add(REDIRECT_CODE)  # set through a constant
    assert found - OWN_CODES == set()


@pytest.mark.parametrize(
    ("error", "label"),
    [
        # A provider's own codes on a 4xx passed to the client: the class's code.
        (
            from_status(400, "too long", provider="p", code="context_length_exceeded"),
            "invalid_request",
        ),
        (from_status(400, "x", provider="p", code="req_6d289d062778"), "invalid_request"),
        (from_status(500, "x", provider="p", code="e500"), "provider_error"),
        (
            ProviderRateLimited("busy", provider="p", upstream_status=429, code="e429"),
            "rate_limit_exceeded",
        ),
        # Switchyard's own: kept.
        (from_status(401, "bad key", provider="p"), "provider_auth_error"),
        (
            from_status(404, "gone", provider="p", code="model_not_found"),
            "provider_model_not_found",
        ),
        (
            ProviderError("mid-stream", provider="p", code="stream_interrupted"),
            "stream_interrupted",
        ),
        (InvalidRequest("x", code="unsupported_parameter"), "unsupported_parameter"),
    ],
)
def test_a_providers_code_is_not_a_label_value(error: ApiError, label: str) -> None:
    assert error_class(error) == label

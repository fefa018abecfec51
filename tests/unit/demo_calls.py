"""A provider call to the offline demo model, as the model-proxy builds one (unit tests)."""

from __future__ import annotations

from typing import Any

from switchyard.schemas.routing import Deployment, Provider
from switchyard.workers.modelproxy.providers.base import ProviderCall


def demo_call(
    op: str, *, stream: bool = False, wants_usage: bool = False, **body: Any
) -> ProviderCall:
    """A call of ``op`` with ``body`` (``model`` is ``demo``) to the demo deployment."""
    return ProviderCall(
        op=op,
        body={"model": "demo", **body},
        stream=stream,
        client_wants_usage=wants_usage,
        provider=Provider(kind="demo"),
        provider_name="demo",
        deployment=Deployment(provider="demo", model="demo"),
        api_key=None,
        first_token_timeout=5,
        total_timeout=5,
    )

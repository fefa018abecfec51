"""Which adapter serves which provider kind; adapters are created on first use and shared."""

from __future__ import annotations

from switchyard.schemas.routing import LITELLM_KINDS, OPENAI_COMPATIBLE_KINDS
from switchyard.workers.modelproxy.providers.base import Adapter


class Adapters:
    """Lazily built adapters; ``close`` releases their connection pools."""

    def __init__(self) -> None:
        self._by_family: dict[str, Adapter] = {}

    def for_kind(self, kind: str) -> Adapter:
        if kind in OPENAI_COMPATIBLE_KINDS:
            return self._shared("openai")
        if kind in LITELLM_KINDS:
            return self._shared("litellm")
        if kind == "demo":
            return self._shared("demo")
        # the route schema makes this unreachable; fail loudly if it changes
        raise ValueError(f"no adapter for provider kind {kind!r}")

    def passthrough(self) -> Adapter:
        """The adapter for providers that speak the client's dialect themselves."""
        return self._shared("passthrough")

    def token_estimate(self) -> Adapter:
        """The adapter counting tokens for providers that cannot count them."""
        return self._shared("token_estimate")

    def _shared(self, family: str) -> Adapter:
        adapter = self._by_family.get(family)
        if adapter is None:
            adapter = self._by_family[family] = self._build(family)
        return adapter

    @staticmethod
    def _build(family: str) -> Adapter:
        # Imported here so a process that never routes to litellm never pays its ~3 s import.
        if family == "openai":
            from switchyard.workers.modelproxy.providers.openai_compat import (  # noqa: PLC0415
                OpenAICompatible,
            )

            return OpenAICompatible()
        if family == "demo":
            from switchyard.workers.modelproxy.providers.demo import Demo  # noqa: PLC0415

            return Demo()
        if family == "passthrough":
            from switchyard.workers.modelproxy.providers.passthrough import (  # noqa: PLC0415
                Passthrough,
            )

            return Passthrough()
        if family == "token_estimate":
            from switchyard.workers.modelproxy.providers.token_estimate import (  # noqa: PLC0415
                TokenEstimate,
            )

            return TokenEstimate()
        from switchyard.workers.modelproxy.providers.litellm_adapter import LiteLLM  # noqa: PLC0415

        return LiteLLM()

    async def close(self) -> None:
        for adapter in self._by_family.values():
            await adapter.close()
        self._by_family.clear()

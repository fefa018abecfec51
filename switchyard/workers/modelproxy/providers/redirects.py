"""Provider calls never follow a redirect.

An HTTP client following a 307 or 308 sends the same request again to the address the answer
names: the prompt, and every header but ``Authorization`` (which clients drop between hosts),
so Azure's ``api-key``, Anthropic's ``x-api-key`` and Gemini's ``x-goog-api-key`` with it. A
provider (or anything between it and Switchyard) could send a deployment's key and its clients'
prompts anywhere. Every adapter asks for no redirects; an answer of 3xx is the deployment's
failure, said without the address it named (a ``Location`` may carry a token).
"""

from __future__ import annotations

from switchyard.errors import ProviderError

REDIRECT_CODE = "provider_redirect"


def is_redirect(status: int) -> bool:
    return 300 <= status < 400


def redirected(provider: str, status: int) -> ProviderError:
    """The failure of a provider call answered with HTTP ``status`` (a 3xx). Tried on another
    deployment and cooled like a server error: every call to this one would be answered the
    same, until its ``api_base`` names the address the provider now serves from."""
    return ProviderError(
        f"provider {provider} answered HTTP {status} (a redirect); Switchyard does not follow "
        "redirects from providers: set the provider's api_base to the address it serves from",
        provider=provider,
        upstream_status=status,
        retryable=True,
        code=REDIRECT_CODE,
    )

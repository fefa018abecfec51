"""The request's id, sent to a provider that logs a client's own id for its requests.

OpenAI reads ``X-Client-Request-Id`` (ASCII, at most 512 characters) and keeps it with the
request in its logs, so a request of ours can be found on the provider's side (its support
asks for one). It is sent to the OpenAI-compatible kinds, on the direct path (chat,
completions, embeddings, Responses) and, through ``extra_headers``, on the litellm path when
litellm calls an OpenAI-compatible server; never to Anthropic, Gemini or the other native
APIs, which document no such header. An id a header cannot carry (not printable ASCII, too
long: a bus caller may set any ``Sy-Request-Id``) is not sent at all rather than cut.
"""

from __future__ import annotations

HEADER = "X-Client-Request-Id"
MAX_LENGTH = 512  # OpenAI's limit for the header
# litellm's provider families (its ``get_llm_provider``) that speak OpenAI's API.
OPENAI_FAMILIES = frozenset(
    {"openai", "azure", "text-completion-openai", "openai_like", "custom_openai", "hosted_vllm"}
)


def client_request_id(request_id: str) -> dict[str, str]:
    """``{X-Client-Request-Id: request_id}``, or nothing when the id cannot be one."""
    if not request_id or len(request_id) > MAX_LENGTH:
        return {}
    if not request_id.isascii() or not request_id.isprintable() or " " in request_id:
        return {}
    return {HEADER: request_id}

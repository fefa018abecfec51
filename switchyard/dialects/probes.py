"""What the edge and the head read from a Responses or Messages request before anything else.

Like the chat probes in :mod:`switchyard.schemas.openai`: one decode into a struct holding only
the routing fields (the model, the stream flag, the output cap for limits), unknown fields
skipped. The full translation runs later, and only when the chosen provider does not speak the
dialect natively, so the probe demands only what every provider requires: Anthropic refuses a
request without ``max_tokens`` or ``messages``, so does this probe; a Responses request may be
stateful (``previous_response_id`` without ``input``) when it is passed through to OpenAI.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

import msgspec

from switchyard.errors import InvalidRequest
from switchyard.schemas.openai import ModelName, decode_body


class ResponsesProbe(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /v1/responses``: what routing and limits need."""

    model: ModelName
    stream: bool | None = False
    max_output_tokens: int | None = None
    background: bool | None = False  # refused here, whatever the deployment (see below)


class MessagesProbe(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /v1/messages``: what routing and limits need."""

    model: ModelName
    max_tokens: Annotated[int, msgspec.Meta(ge=1)]
    messages: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1)]
    stream: bool | None = False


class CountTokensProbe(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /v1/messages/count_tokens``: a Messages request without ``max_tokens``."""

    model: ModelName
    messages: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1)]

    @property
    def stream(self) -> bool:
        """A count is one JSON object, never a stream."""
        return False


class InputTokensProbe(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /v1/responses/input_tokens``: a Responses request to count, never streamed.

    OpenAI makes ``model`` optional here; routing needs it, so it is required.
    """

    model: ModelName

    @property
    def stream(self) -> bool:
        """A count is one JSON object, never a stream."""
        return False


# The token-count operations, and the dialect whose requests each counts. A count is a request
# (keys, allow-lists, RPM) that generates nothing: no TPM held, no spend, interactive priority.
COUNTS = {"count_tokens": "messages", "input_tokens": "responses"}

T = TypeVar("T")

_RESPONSES = msgspec.json.Decoder(ResponsesProbe)
_MESSAGES = msgspec.json.Decoder(MessagesProbe)
_COUNT_TOKENS = msgspec.json.Decoder(CountTokensProbe)
_INPUT_TOKENS = msgspec.json.Decoder(InputTokensProbe)


def probe_responses(body: bytes) -> ResponsesProbe:
    """Validate the routing fields of a Responses request.

    Raises:
        InvalidRequest: not a JSON object, or ``model`` missing or mistyped; ``param`` names it.
    """
    probe = _probe(_RESPONSES, body)
    if probe.background:
        raise background_refused()
    return probe


def background_refused() -> InvalidRequest:
    """The answer to a Responses request with ``background: true``, on any deployment.

    OpenAI would queue it and answer with an id to poll, but ``GET /v1/responses/{id}`` does not
    reach a provider through Switchyard: the answer could never be read (and its usage never
    billed). The HTTP edges refuse it here; the model-proxy refuses it for callers on the bus.
    """
    return InvalidRequest(
        "`background: true` needs the response to be fetched later from the server, which "
        "Switchyard does not offer: use `stream: true` for long answers.",
        param="background",
        code="unsupported_parameter",
    )


def probe_messages(body: bytes) -> MessagesProbe:
    """Validate the routing fields of an Anthropic Messages request.

    Raises:
        InvalidRequest: not a JSON object, or ``model``, ``max_tokens`` or ``messages`` missing
            or mistyped; ``param`` names the field.
    """
    return _probe(_MESSAGES, body)


def probe_count_tokens(body: bytes) -> CountTokensProbe:
    """Validate the routing fields of an Anthropic token-counting request.

    Raises:
        InvalidRequest: not a JSON object, or ``model`` or ``messages`` missing or mistyped;
            ``param`` names the field.
    """
    return _probe(_COUNT_TOKENS, body)


def probe_input_tokens(body: bytes) -> InputTokensProbe:
    """Validate the routing field of an OpenAI input-token count (``model``).

    Raises:
        InvalidRequest: not a JSON object, or ``model`` missing or mistyped.
    """
    return _probe(_INPUT_TOKENS, body)


def _probe(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    return decode_body(decoder, body, _invalid)


def _invalid(text: str) -> InvalidRequest:
    # msgspec: "Expected `int`, got `str` - at `$.max_tokens`" / "Object missing required field
    # `max_tokens`"; Anthropic words the latter "max_tokens: Field required".
    if "missing required field" in text:
        field = text.rsplit("`", 2)[-2]
        if " - at `$." not in text:
            return InvalidRequest(
                f"{field}: Field required", param=field, code="missing_required_parameter"
            )
    if " - at `$." in text:
        text, _, where = text.partition(" - at `$.")
        param = where.rstrip("`").split("[", 1)[0].split(".", 1)[0]
        return InvalidRequest(f"{param}: {text.replace('`', '')}", param=param)
    if text.startswith("Expected `object`"):
        return InvalidRequest("request body must be a JSON object")
    return InvalidRequest(text.replace("`", "'"))

"""The slice of the OpenAI API that Switchyard reads; everything else passes through untouched.

The ingress decodes each body once into a *probe* struct holding only the fields it needs
(model, stream flags, and the presence and shape of the prompt). Unknown fields are skipped by
the decoder, not stored, so provider-specific extras survive because the original bytes are what
travels on. Decoders are built once here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import msgspec

from switchyard.errors import ApiError, InvalidRequest
from switchyard.schemas.bad_json import not_json, top_field

T = TypeVar("T")

ModelName = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class StreamOptions(msgspec.Struct, frozen=True, kw_only=True):
    include_usage: bool = False


class ChatProbe(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /v1/chat/completions``: what routing and limits need."""

    model: ModelName
    messages: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1)]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    service_tier: str | None = None  # OpenAI's; maps onto a priority class (see scheduling)


class CompletionProbe(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /v1/completions`` (legacy)."""

    model: ModelName
    prompt: msgspec.Raw
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    service_tier: str | None = None


class EmbeddingProbe(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /v1/embeddings``."""

    model: ModelName
    input: msgspec.Raw


class ModelOnly(msgspec.Struct, frozen=True):
    """What the head reads from any request body: just the model."""

    model: ModelName
    stream: bool | None = False
    service_tier: str | None = None


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """Tokens of one answer, as everything downstream of the provider counts them.

    ``prompt_tokens`` is every prompt token, cached or not (what OpenAI reports, what TPM and
    the spend counters count). ``cache_read_tokens`` and ``cache_write_tokens`` are the part of
    it read from and written to the provider's prompt cache, which providers price apart (an
    Anthropic cache read costs a tenth of an input token, a write a quarter more). They are
    Switchyard's own: :meth:`wire` is what a client is shown. ``web_search_calls`` counts the
    provider's own web searches the answer made (read from native Anthropic and Responses
    answers), which providers charge per call.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    web_search_calls: int = 0

    def wire(self) -> dict[str, int]:
        """OpenAI's ``usage`` object (the triple; the cache counts are not OpenAI's fields)."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


def cache_counts(
    prompt: int,
    read: int | None,
    write: int | None,
    cached: int | None = None,
    created: int | None = None,
) -> tuple[int, int]:
    """Cache reads and writes of an OpenAI-shaped usage, within its ``prompt`` tokens.

    ``read`` and ``write`` are the ``cache_read_input_tokens`` and
    ``cache_creation_input_tokens`` that litellm (and OpenAI-compatible servers in front of
    Anthropic) put beside the triple; ``cached`` and ``created`` are
    ``prompt_tokens_details.cached_tokens`` (OpenAI's) and ``.cache_creation_tokens``
    (litellm's), the same counts where both are given. A count a server got wrong never makes
    more cache tokens than prompt tokens (nor a negative count).
    """
    reads = max(0, read or 0, cached or 0)
    writes = max(0, write or 0, created or 0)
    reads = min(reads, max(0, prompt))
    return reads, min(writes, max(0, prompt) - reads)


class _PromptDetails(msgspec.Struct, frozen=True):
    cached_tokens: int | None = None
    cache_creation_tokens: int | None = None


class _WireUsage(msgspec.Struct, frozen=True):
    """``usage`` as OpenAI (and OpenAI-compatible servers, litellm among them) report it."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: _PromptDetails | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None

    def counted(self) -> Usage:
        prompt = self.prompt_tokens
        d = self.prompt_tokens_details
        read, write = cache_counts(
            prompt,
            self.cache_read_input_tokens,
            self.cache_creation_input_tokens,
            d.cached_tokens if d is not None else None,
            d.cache_creation_tokens if d is not None else None,
        )
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=self.completion_tokens,
            total_tokens=self.total_tokens,
            cache_read_tokens=read,
            cache_write_tokens=write,
        )


class UsageCarrier(msgspec.Struct, frozen=True):
    """Any response or chunk that may carry ``usage`` (the rest is skipped, not decoded)."""

    usage: _WireUsage | None = None


class ErrorDetail(msgspec.Struct, frozen=True, omit_defaults=False):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(msgspec.Struct, frozen=True):
    error: ErrorDetail


class Model(msgspec.Struct, frozen=True):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "switchyard"


class ModelList(msgspec.Struct, frozen=True):
    data: list[Model]
    object: str = "list"


PROBES: dict[str, type[ChatProbe] | type[CompletionProbe] | type[EmbeddingProbe]] = {
    "chat": ChatProbe,
    "complete": CompletionProbe,
    "embed": EmbeddingProbe,
}
_DECODERS = {op: msgspec.json.Decoder(t) for op, t in PROBES.items()}
_MODEL_DECODER = msgspec.json.Decoder(ModelOnly)
_USAGE_DECODER = msgspec.json.Decoder(UsageCarrier)
_WIRE_USAGE_DECODER = msgspec.json.Decoder(_WireUsage)
_ERROR_DECODER = msgspec.json.Decoder(ErrorBody)
_ENCODER = msgspec.json.Encoder()


def probe(op: str, body: bytes) -> ChatProbe | CompletionProbe | EmbeddingProbe:
    """Validate a request body for ``op`` (``chat``, ``complete`` or ``embed``).

    Raises:
        InvalidRequest: not JSON, not an object, or a required field missing or mistyped; the
            error's ``param`` names the field.
    """
    result: ChatProbe | CompletionProbe | EmbeddingProbe = decode_body(_DECODERS[op], body)
    if isinstance(result, CompletionProbe):
        _text_or_list(result.prompt, "prompt")
    elif isinstance(result, EmbeddingProbe):
        _text_or_list(result.input, "input")
    return result


# The first byte of a JSON string or array (raw values carry no leading whitespace).
_TEXT_OR_LIST = frozenset(b'"[')


def _text_or_list(raw: msgspec.Raw, field: str) -> None:
    """A prompt or embedding input is a string or an array (of strings or token ids), as
    OpenAI requires: anything else is refused here, not passed for a provider to choke on
    (one that ended its stream early made it a 502). What the array holds stays unread.

    Raises:
        InvalidRequest: ``field`` is neither.
    """
    view = memoryview(raw)
    if not view or view[0] not in _TEXT_OR_LIST:
        raise InvalidRequest(
            f"Invalid '{field}': expected a string or an array of strings or token ids.",
            param=field,
        )


def decode_body(
    decoder: msgspec.json.Decoder[T],
    body: bytes,
    invalid: Callable[[str], InvalidRequest] | None = None,
) -> T:
    """``body`` decoded by ``decoder``; every way it can fail is a 400 (``invalid`` words a
    validation error, default OpenAI's way), never an exception a worker did not expect.

    Raises:
        InvalidRequest: not JSON, nested too deeply, or not of the decoder's type.
    """
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise (invalid or _invalid)(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise not_json(str(exc), body) from None
    except RecursionError:
        raise _too_deep() from None


def model_of(body: bytes) -> ModelOnly:
    """The model (and stream flag) of any request body.

    Raises:
        InvalidRequest: the body is not JSON or has no usable ``model``.
    """
    return decode_body(_MODEL_DECODER, body)


def usage_of(body: bytes) -> Usage | None:
    """The ``usage`` of a response or chunk, or None (malformed bodies count as no usage)."""
    if b'"usage"' not in body:
        return None
    try:
        usage = _USAGE_DECODER.decode(body).usage
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None
    return usage.counted() if usage is not None else None


def usage_in(raw: bytes) -> Usage | None:
    """The usage object ``raw`` (its JSON, as a raw field kept it), or None for ``null``, an
    empty or a malformed one."""
    if not raw or raw == b"null":
        return None
    try:
        return _WIRE_USAGE_DECODER.decode(raw).counted()
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None


def _too_deep() -> InvalidRequest:
    # msgspec decodes (and skips) nested values recursively: a hostile body nested a few
    # thousand levels deep reaches the interpreter's recursion limit.
    return InvalidRequest("request body is nested too deeply", code="invalid_json")


def _invalid(text: str) -> InvalidRequest:
    # msgspec: "Expected `str`, got `int` - at `$.model`", "Object missing required field
    # `role` - at `$.messages[0]`". The SDKs print only the message, so it names the field
    # with its full path, in OpenAI's words; ``param`` is the top-level field.
    where = ""
    if " - at `$" in text:
        text, _, at = text.partition(" - at `$")
        where = at.rstrip("`").lstrip(".")
    text = text.replace("`", "'")
    if text.startswith("Object missing required field '"):
        field = text.rsplit("'", 2)[-2]
        path = f"{where}.{field}" if where else field
        return InvalidRequest(
            f"Missing required parameter: '{path}'.",
            param=top_field(path),
            code="missing_required_parameter",
        )
    if not where:
        if text.startswith("Expected 'object'"):
            text = "request body must be a JSON object"
        return InvalidRequest(text)
    detail = text[0].lower() + text[1:]
    return InvalidRequest(f"Invalid '{where}': {detail}.", param=top_field(where))


def error_body(exc: ApiError) -> bytes:
    """The OpenAI error JSON for ``exc``."""
    return _ENCODER.encode(
        ErrorBody(ErrorDetail(message=exc.message, type=exc.type, param=exc.param, code=exc.code))
    )


def openai_status(status: int) -> int:
    """The HTTP status an OpenAI client is answered with: Anthropic's 529 (overloaded) is no
    status of OpenAI's, so its SDKs would not know it; 503 says the same to them."""
    return 503 if status == 529 else status


def decode_error(body: bytes) -> ErrorDetail | None:
    try:
        return _ERROR_DECODER.decode(body).error
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None


def encode(obj: Any) -> bytes:
    return _ENCODER.encode(obj)

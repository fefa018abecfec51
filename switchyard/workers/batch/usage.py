"""A batch's ``usage``: the tokens of its lines' answers, summed from their recorded results.

The sum is always taken over recorded results (each line's is recorded once), never kept
apart from them: the runner sums the results recorded before it (re)started and adds each it
records, and the final sum is taken again from every result as the output files are written.
A restart so neither loses a line's tokens nor counts them twice.

The endpoints name their tokens differently: chat completions, completions and embeddings
``prompt_tokens`` / ``completion_tokens`` (``*_tokens_details``), the Responses API
``input_tokens`` / ``output_tokens``, as OpenAI's batch ``usage`` does.
"""

from __future__ import annotations

import msgspec

from switchyard.schemas import batches as b


class _Details(msgspec.Struct, frozen=True):
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


class _Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: _Details | None = None
    completion_tokens_details: _Details | None = None
    input_tokens_details: _Details | None = None
    output_tokens_details: _Details | None = None


class _Body(msgspec.Struct, frozen=True):
    usage: _Usage | None = None


class _Response(msgspec.Struct, frozen=True):
    body: _Body | None = None


class _Row(msgspec.Struct, frozen=True):
    """An OpenAI output or error row (only what holds tokens)."""

    response: _Response | None = None


_ROW = msgspec.json.Decoder(_Row)


def _n(*values: int | None) -> int:
    """The first of ``values`` given (0 when none is)."""
    return next((v for v in values if v is not None), 0)


def _details(*found: _Details | None) -> _Details:
    return next((d for d in found if d is not None), _Details())


class Tally:
    """The summed usage of the results :meth:`add` was given."""

    def __init__(self) -> None:
        self.results = 0
        self.input = 0
        self.cached = 0
        self.output = 0
        self.reasoning = 0
        self.total = 0

    def add(self, result: bytes) -> None:
        """Count one line's recorded result (an error row counts as a result with no tokens;
        so does a body that is no JSON object, or whose usage is not whole numbers)."""
        self.results += 1
        try:
            response = _ROW.decode(result).response
        except (msgspec.ValidationError, msgspec.DecodeError):
            return
        used = response.body.usage if response is not None and response.body else None
        if used is None:
            return
        taken = _n(used.input_tokens, used.prompt_tokens)
        given = _n(used.output_tokens, used.completion_tokens)
        self.input += taken
        self.output += given
        self.total += _n(used.total_tokens, taken + given)
        inputs = _details(used.input_tokens_details, used.prompt_tokens_details)
        outputs = _details(used.output_tokens_details, used.completion_tokens_details)
        self.cached += _n(inputs.cached_tokens)
        self.reasoning += _n(outputs.reasoning_tokens)

    def usage(self) -> b.BatchUsage | None:
        """The batch's ``usage``; None before any line has a result."""
        if not self.results:
            return None
        return b.BatchUsage(
            input_tokens=self.input,
            input_tokens_details=b.InputTokensDetails(cached_tokens=self.cached),
            output_tokens=self.output,
            output_tokens_details=b.OutputTokensDetails(reasoning_tokens=self.reasoning),
            total_tokens=self.total,
        )

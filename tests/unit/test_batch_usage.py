"""A batch's ``usage``: its lines' recorded results, summed into OpenAI's batch usage shape
(``input_tokens``, ``output_tokens``, their details, ``total_tokens``) whichever endpoint's
names the answers use."""

from __future__ import annotations

import json
from typing import Any

from switchyard.schemas import batches as b
from switchyard.workers.batch.usage import Tally


def _row(body: Any, status: int = 200) -> bytes:
    response = {"status_code": status, "request_id": "batch_x:1", "body": body}
    return json.dumps({"id": "r", "custom_id": "c", "response": response, "error": None}).encode()


CHAT = _row(
    {
        "object": "chat.completion",
        "usage": {
            "prompt_tokens": 11,
            "completion_tokens": 5,
            "total_tokens": 16,
            "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
    }
)
RESPONSES = _row(
    {
        "object": "response",
        "usage": {
            "input_tokens": 20,
            "output_tokens": 9,
            "total_tokens": 29,
            "input_tokens_details": {"cached_tokens": 8},
            "output_tokens_details": {"reasoning_tokens": 3},
        },
    }
)
EMBEDDINGS = _row({"object": "list", "usage": {"prompt_tokens": 6, "total_tokens": 6}})
COMPLETION_NO_TOTAL = _row({"usage": {"prompt_tokens": 3, "completion_tokens": 4}})
ERROR = _row({"error": {"message": "no", "type": "invalid_request_error"}}, status=404)
EXPIRED = json.dumps(
    {"id": "r", "custom_id": "c", "response": None, "error": {"code": "batch_expired"}}
).encode()


def test_no_result_yet_is_no_usage() -> None:
    assert Tally().usage() is None


def test_every_endpoints_tokens_are_summed_in_openais_batch_shape() -> None:
    tally = Tally()
    for result in (CHAT, RESPONSES, EMBEDDINGS, COMPLETION_NO_TOTAL, CHAT):
        tally.add(result)
    assert tally.usage() == b.BatchUsage(
        input_tokens=11 + 20 + 6 + 3 + 11,
        input_tokens_details=b.InputTokensDetails(cached_tokens=4 + 8 + 4),
        output_tokens=5 + 9 + 0 + 4 + 5,
        output_tokens_details=b.OutputTokensDetails(reasoning_tokens=2 + 3 + 2),
        total_tokens=16 + 29 + 6 + 7 + 16,
    )


def test_results_without_tokens_count_nothing_but_are_results() -> None:
    tally = Tally()
    for result in (
        ERROR,
        EXPIRED,
        _row("not json, kept as a string"),
        _row({"usage": {"prompt_tokens": "many"}}),
        _row({"usage": None}),
        b"\xff not json at all",
    ):
        tally.add(result)
    assert tally.usage() == b.BatchUsage()


def test_null_details_count_as_none() -> None:
    tally = Tally()
    tally.add(
        _row(
            {
                "usage": {
                    "prompt_tokens": 2,
                    "completion_tokens": 1,
                    "total_tokens": 3,
                    "prompt_tokens_details": {"cached_tokens": None},
                    "completion_tokens_details": None,
                }
            }
        )
    )
    usage = tally.usage()
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (2, 1, 3)
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0

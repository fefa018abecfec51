"""The OpenAI Batch API's output and error files as the runner assembles them from recorded
results, one result at a time."""

from __future__ import annotations

import json

from switchyard.errors import RateLimited
from switchyard.schemas import batches as b
from switchyard.workers.batch import formats
from tests.unit.batch_files import assemble

FMT = formats.OPENAI
LINES = [
    b.BatchLine(custom_id=f"r{i}", method="POST", url="/v1/chat/completions", body={})
    for i in (1, 2, 3, 4)
]
ANSWER = b'{"id":"chatcmpl-1","choices":[]}'


def _results() -> list[tuple[int, bytes]]:
    refused = RateLimited("slow down")
    # Recorded in the order the lines finished, not the order they were sent.
    return [
        (3, FMT.line("batch_x", 3, LINES[2], 200, ANSWER)),
        (1, FMT.line("batch_x", 1, LINES[0], refused.status, FMT.error(refused))),
    ]


def test_successes_and_failures_go_to_their_own_files() -> None:
    output, errors, counts = assemble(FMT, LINES, _results(), "completed", "batch_x")
    assert counts == (1, 1)
    assert [json.loads(r)["custom_id"] for r in output] == ["r3"]
    assert json.loads(output[0])["response"]["body"] == json.loads(ANSWER)
    failed = json.loads(errors[0])
    assert failed["custom_id"] == "r1"
    assert failed["response"]["status_code"] == 429
    assert len(errors) == 1  # the lines that never ran of a completed batch get no row


def test_an_expired_batch_fails_every_line_that_never_ran() -> None:
    output, errors, counts = assemble(FMT, LINES, _results(), "expired", "batch_x")
    assert counts == (1, 3)
    assert len(output) == 1
    rows = [json.loads(r) for r in errors]
    assert [r["custom_id"] for r in rows] == ["r1", "r2", "r4"]
    assert rows[1]["response"] is None  # as OpenAI writes a line the batch never ran
    assert rows[1]["error"]["code"] == "batch_expired"
    assert rows[1]["error"]["message"]
    assert rows[1]["id"] == "batch_req_batch_x_2"


def test_a_cancelled_batch_lists_only_what_ran() -> None:
    output, errors, counts = assemble(FMT, LINES, _results(), "cancelled", "batch_x")
    assert (len(output), len(errors), counts) == (1, 1, (1, 1))


def test_a_result_read_twice_or_for_no_such_line_is_written_once() -> None:
    twice = [*_results(), _results()[0], (9, FMT.line("batch_x", 9, LINES[0], 200, ANSWER))]
    output, errors, counts = assemble(FMT, LINES, twice, "completed", "batch_x")
    assert (len(output), len(errors), counts) == (1, 1, (1, 1))

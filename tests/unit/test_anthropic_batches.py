"""Anthropic's Message Batches: the create request read into batch lines, the batch object
made from a stored batch, and the results file the runner writes."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from switchyard.dialects.anthropic import batches as ab
from switchyard.errors import InvalidRequest, RateLimited
from switchyard.schemas import batches as b
from switchyard.workers.batch import formats
from tests.unit.batch_files import assemble


def _batch(status: b.BatchStatus, total: int, completed: int, failed: int, **kw: Any) -> b.Batch:
    return b.Batch(
        id="msgbatch_x",
        endpoint=b.MESSAGES_ENDPOINT,
        input_file_id="file-msgbatch_x-input",
        completion_window="24h",
        status=status,
        created_at=1_700_000_000,
        expires_at=1_700_086_400,
        request_counts=b.RequestCounts(total=total, completed=completed, failed=failed),
        **kw,
    )


def test_requests_become_lines_for_the_messages_endpoint() -> None:
    body = json.dumps(
        {
            "requests": [
                {"custom_id": "a-1", "params": {"model": "m", "max_tokens": 5, "messages": []}},
                {"custom_id": "B_2", "params": {"model": "m", "stream": True}},
            ]
        }
    ).encode()
    data, count = ab.input_lines(body)
    assert count == 2
    lines = [b.BATCH_LINE.decode(raw) for raw in data.splitlines()]
    assert [(x.custom_id, x.method, x.url) for x in lines] == [
        ("a-1", "POST", "/v1/messages"),
        ("B_2", "POST", "/v1/messages"),
    ]
    assert lines[0].body == {"model": "m", "max_tokens": 5, "messages": []}


def test_requests_are_copied_as_sent_one_line_each_however_the_body_is_laid_out() -> None:
    requests = [
        {
            "custom_id": "r1",
            "params": {"model": "m", "messages": [{"role": "user", "content": "a\nb"}]},
        },
        {"custom_id": "r2", "params": {"model": "m", "system": "héllo ✓", "max_tokens": 9}},
    ]
    for body in (
        json.dumps({"requests": requests}, indent=2).encode(),  # line breaks between tokens
        json.dumps({"requests": requests}, indent=2).encode().replace(b"\n", b"\r"),  # CR only
        json.dumps({"requests": requests}, ensure_ascii=False).encode(),  # raw UTF-8
        json.dumps({"requests": requests}, separators=(",", ":")).encode(),
    ):
        data, count = ab.input_lines(body)
        lines = data.splitlines()
        assert count == len(lines) == 2
        decoded = [b.BATCH_LINE.decode(raw) for raw in lines]
        assert [x.body for x in decoded] == [r["params"] for r in requests]
        assert [x.custom_id for x in decoded] == ["r1", "r2"]


def test_a_body_that_is_not_utf8_is_refused() -> None:
    good = {"requests": [{"custom_id": "a", "params": {"model": "m", "x": "é"}}]}
    latin1 = json.dumps(good, ensure_ascii=False).encode("latin-1")  # é as one byte: not UTF-8
    in_model = b'{"requests":[{"custom_id":"a","params":{"model":"m\xff"}}]}'
    for bad in (latin1, in_model):
        with pytest.raises(InvalidRequest, match="UTF-8"):
            ab.input_lines(bad)


@pytest.mark.parametrize(
    ("requests", "param"),
    [
        ([], "requests"),
        ([{"custom_id": "", "params": {"model": "m"}}], "requests.0.custom_id"),
        ([{"custom_id": "é", "params": {"model": "m"}}], "requests.0.custom_id"),
        ([{"custom_id": "x" * 65, "params": {"model": "m"}}], "requests.0.custom_id"),
        ([{"custom_id": "a", "params": {"model": "m"}}] * 2, "requests.1.custom_id"),
        ([{"custom_id": "a", "params": {"model": 3}}], "requests.0.params.model"),
        ([{"custom_id": "a", "params": []}], "requests.0.params"),
    ],
)
def test_a_bad_create_names_the_field(requests: list[Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        ab.input_lines(json.dumps({"requests": requests}).encode())
    assert refused.value.param is not None
    assert refused.value.param.startswith(param) or param in refused.value.message


def test_counts_stay_processing_until_the_batch_ends() -> None:
    running = ab.batch_object(_batch("in_progress", 10, 4, 1), "http://gw")
    assert running["processing_status"] == "in_progress"
    assert running["request_counts"] == {
        "processing": 10,
        "succeeded": 0,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert running["results_url"] is None
    assert running["ended_at"] is None
    assert running["created_at"] == "2023-11-14T22:13:20Z"
    stopping = ab.batch_object(_batch("cancelling", 10, 4, 1, cancelling_at=1_700_000_100), "")
    assert stopping["processing_status"] == "canceling"
    assert stopping["cancel_initiated_at"] == "2023-11-14T22:15:00Z"


@pytest.mark.parametrize(
    ("status", "stamp", "expect"),
    [
        ("completed", "completed_at", (7, 3, 0, 0)),
        ("cancelled", "cancelled_at", (4, 1, 5, 0)),
        ("expired", "expired_at", (4, 1, 0, 5)),
    ],
)
def test_an_ended_batch_accounts_for_every_request(
    status: b.BatchStatus, stamp: str, expect: tuple[int, int, int, int]
) -> None:
    completed, failed = (7, 3) if status == "completed" else (4, 1)
    batch = _batch(status, 10, completed, failed, output_file_id="f", **{stamp: 1_700_000_200})
    doc = ab.batch_object(batch, "http://gw:8080")
    counts = doc["request_counts"]
    got = (counts["succeeded"], counts["errored"], counts["canceled"], counts["expired"])
    assert got == expect
    assert counts["processing"] == 0
    assert doc["processing_status"] == "ended"
    assert doc["ended_at"] == "2023-11-14T22:16:40Z"
    assert doc["results_url"] == "http://gw:8080/v1/messages/batches/msgbatch_x/results"


def test_result_lines_say_what_became_of_each_request() -> None:
    fmt = formats.for_endpoint(b.MESSAGES_ENDPOINT)
    lines = [
        b.BatchLine(custom_id=f"r{i}", method="POST", url="/v1/messages", body={})
        for i in (1, 2, 3, 4)
    ]
    message = b'{"type":"message","content":[{"type":"text","text":"hi"}]}'
    refused = RateLimited("slow down")
    results = {
        1: fmt.line("msgbatch_x", 1, lines[0], 200, message),
        3: fmt.line("msgbatch_x", 3, lines[2], refused.status, fmt.error(refused)),
    }
    assert fmt.ok(results[1])
    assert not fmt.ok(results[3])
    output, errors, counts = assemble(fmt, lines, results, "cancelled")
    assert (counts, errors) == ((1, 1), [])
    rows = {r["custom_id"]: r["result"] for r in map(json.loads, output)}
    assert rows["r1"] == {"type": "succeeded", "message": json.loads(message)}
    assert rows["r3"] == {
        "type": "errored",
        "error": {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
    }
    assert rows["r2"] == rows["r4"] == {"type": "canceled"}
    expired, _, counts = assemble(fmt, lines, results, "expired")
    assert [json.loads(r)["result"]["type"] for r in expired[2:]] == ["expired"] * 2
    assert counts == (1, 1)  # requests that never ran count as neither


def test_a_success_is_read_from_the_result_not_from_the_message_text() -> None:
    """A message whose tool input says ``"type": "succeeded"`` does not make an error a
    success, nor the reverse."""
    tricky = b'{"type":"message","content":[{"type":"tool_use","input":{"type":"errored"}}]}'
    line = ab.result_line("c", 200, tricky)
    assert ab.succeeded(line)
    error = b'{"type":"error","error":{"type":"api_error",'
    error += b'"message":"{\\"type\\":\\"succeeded\\"}"}}'
    assert not ab.succeeded(ab.result_line("c", 500, error))
    unreadable = msgspec.json.decode(ab.result_line("c", 200, b"not json"))
    assert unreadable["result"]["type"] == "errored"

"""What is wrong with a batch's input line is said in plain words, naming the field: not the
JSON decoder's ("Expected `str` of length >= 1 - at `$.custom_id`", "JSON is malformed:
invalid character (byte 4)"), and a GET line is named for its method, not its url."""

from __future__ import annotations

import json

import pytest

from switchyard.workers.batch.inputs import Invalid
from tests.unit.test_batch_custom_ids import ENDPOINT, Lines

GOOD = {"custom_id": "a", "method": "POST", "url": ENDPOINT, "body": {"model": "m"}}


def _raw(**changed: object) -> bytes:
    return json.dumps({**GOOD, **changed}).encode()


async def _said(raw: bytes) -> tuple[str, str | None, str]:
    with pytest.raises(Invalid) as invalid:
        await Lines([raw]).check()
    [error] = invalid.value.errors
    assert error.line == 1
    return error.code, error.param, error.message


@pytest.mark.parametrize(
    ("raw", "param", "message"),
    [
        (_raw(custom_id=""), "custom_id", "custom_id must not be empty"),
        (_raw(custom_id=3), "custom_id", "custom_id must be a string, not a number"),
        (_raw(body="hi"), "body", "body must be a JSON object, not a string"),
        (
            b'{"method": "POST", "url": "u", "body": {}}',
            "custom_id",
            "the line has no custom_id (every line needs custom_id, method, url and body)",
        ),
        (b"[1]", None, "a line must be a JSON object with custom_id, method, url and body"),
        (b'{"cu x', None, "the line is not valid JSON: it ends before its JSON does"),
        (_raw() + b" x", None, "the line is not valid JSON: trailing characters at character"),
    ],
)
async def test_a_malformed_line_is_said_plainly(
    raw: bytes, param: str | None, message: str
) -> None:
    code, said_param, said = await _said(raw)
    assert code == "invalid_json_line"
    assert said_param == param
    assert said.startswith(message), said
    assert "Expected `" not in said
    assert "$." not in said
    assert "(byte " not in said


async def test_a_get_line_is_named_for_its_method_and_a_wrong_url_for_its_url() -> None:
    code, param, said = await _said(_raw(method="GET"))
    assert (code, param) == ("invalid_url", "method")
    assert said == f"method is 'GET': every line must be POST (to {ENDPOINT})"
    code, param, said = await _said(_raw(url="/v1/embeddings"))
    assert (code, param) == ("invalid_url", "url")
    wanted = f"url is '/v1/embeddings': every line of this batch must go to {ENDPOINT}"
    assert said.startswith(wanted)

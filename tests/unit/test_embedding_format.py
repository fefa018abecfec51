"""Embeddings in the encoding their request asked for (``encoding_format``): OpenAI sends
base64 of little-endian float32 when asked, and its Node SDK decodes whatever comes back as
base64, so a list of floats sent instead becomes garbage without an error."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest

from switchyard.errors import InvalidRequest
from switchyard.workers.modelproxy.providers import embedding_format as ef
from switchyard.workers.modelproxy.providers.base import ProviderCall
from switchyard.workers.modelproxy.providers.demo import EMBEDDING_DIMENSIONS, Demo
from tests.unit.demo_calls import demo_call

pytestmark = pytest.mark.unit


def _doc(*vectors: Any) -> dict[str, Any]:
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": "m"}


def _unpacked(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def test_floats_asked_as_base64_are_little_endian_float32() -> None:
    doc = ef.encoded(_doc([1.0, -0.5, 0.25], [3]), "base64")
    first, second = (item["embedding"] for item in doc["data"])
    assert first == base64.b64encode(struct.pack("<3f", 1.0, -0.5, 0.25)).decode()
    assert _unpacked(first) == [1.0, -0.5, 0.25]
    assert _unpacked(second) == [3.0]


def test_what_is_already_as_asked_passes_and_base64_asked_as_floats_is_decoded() -> None:
    packed = base64.b64encode(struct.pack("<2f", 0.5, 2.0)).decode()
    assert ef.encoded(_doc(packed), "base64")["data"][0]["embedding"] == packed
    assert ef.encoded(_doc([0.5]), "float")["data"][0]["embedding"] == [0.5]
    assert ef.encoded(_doc(packed), "float")["data"][0]["embedding"] == [0.5, 2.0]
    # Neither readable base64 nor numbers: left as it came, not made up.
    assert ef.encoded(_doc("not base64!"), "float")["data"][0]["embedding"] == "not base64!"
    assert ef.encoded(_doc(["x"]), "base64")["data"][0]["embedding"] == ["x"]


def test_the_format_asked_for() -> None:
    assert ef.requested({}) == ef.requested({"encoding_format": None}) == "float"
    assert ef.requested({"encoding_format": "base64"}) == "base64"
    with pytest.raises(InvalidRequest) as refused:
        ef.requested({"encoding_format": "int8"})
    assert refused.value.param == "encoding_format"
    assert refused.value.status == 400


def _demo_call(**body: Any) -> ProviderCall:
    return demo_call("embed", **{"input": ["a b", "c"], **body})


async def test_the_demo_model_answers_base64_when_asked() -> None:
    demo = Demo()
    floats = json.loads((await demo.complete(_demo_call())).body)["data"]
    packed = json.loads((await demo.complete(_demo_call(encoding_format="base64"))).body)["data"]
    for plain, encoded in zip(floats, packed, strict=True):
        assert len(plain["embedding"]) == EMBEDDING_DIMENSIONS
        assert _unpacked(encoded["embedding"]) == pytest.approx(plain["embedding"], rel=1e-6)


def test_a_passed_through_answer_gets_base64_for_float_lists_only() -> None:
    """The OpenAI-compatible path's answer to a request that asked for base64: lists a server
    sent anyway are encoded, the rest of the answer kept; an answer already in base64 (or not
    a JSON object) is returned as the very same bytes, never decoded."""
    listed = json.dumps({**_doc([1.0, -0.5], [3]), "usage": {"prompt_tokens": 2}}).encode()
    doc = json.loads(ef.base64_answer(listed))
    assert [_unpacked(item["embedding"]) for item in doc["data"]] == [[1.0, -0.5], [3.0]]
    assert doc["usage"] == {"prompt_tokens": 2}
    assert [item["index"] for item in doc["data"]] == [0, 1]
    spaced = b'{"data": [{"index": 0, "embedding" : [0.5]}]}'
    assert _unpacked(json.loads(ef.base64_answer(spaced))["data"][0]["embedding"]) == [0.5]
    packed = json.dumps(_doc(base64.b64encode(struct.pack("<f", 0.5)).decode())).encode()
    assert ef.base64_answer(packed) is packed
    for odd in (b'[{"embedding": [1]}]', b'{"embedding": [1'):
        assert ef.base64_answer(odd) is odd

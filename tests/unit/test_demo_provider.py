"""The offline demo model: what a token count says is what the request's usage then says."""

from __future__ import annotations

import json
from typing import Any

import pytest

from switchyard.dialects import anthropic, responses
from switchyard.errors import InvalidRequest
from switchyard.workers.modelproxy.providers.demo import Demo, prompt_words
from tests.unit.demo_calls import demo_call

CONVERSATIONS: list[dict[str, Any]] = [
    {"system": "be brief", "messages": [{"role": "user", "content": "Hello!"}]},
    {
        "system": [{"type": "text", "text": "answer in French"}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "what is a switchyard"}]},
            {"role": "assistant", "content": "a place where trains are sorted"},
            {"role": "user", "content": "and in a gateway?"},
        ],
    },
]


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_a_messages_count_matches_the_words_its_chat_is_billed_for(
    conversation: dict[str, Any],
) -> None:
    """A newcomer's ``count_tokens`` said 9 for "Hello!" while the chat's usage said 1: the
    count was OpenAI's tokenizer, the usage the demo's words (of the last message only)."""
    request = {"model": "demo", "max_tokens": 16, **conversation}
    chat = anthropic.to_chat(request).chat
    assert prompt_words(request) == prompt_words(chat)
    words = " ".join(
        block if isinstance(block, str) else " ".join(b["text"] for b in block)
        for block in [conversation["system"], *(m["content"] for m in conversation["messages"])]
    )
    assert prompt_words(chat) == len(words.split())


def test_a_responses_count_matches_its_chat_and_nothing_counts_as_zero() -> None:
    request = {"model": "demo", "instructions": "be brief", "input": "hello there"}
    assert prompt_words(request) == prompt_words(responses.to_chat(request).chat) == 4
    assert prompt_words({"model": "demo", "messages": []}) == 1  # never free
    assert prompt_words({"model": "demo", "prompt": ["two words", "three more words"]}) == 5


def test_nesting_as_deep_as_json_allows_is_counted_not_a_crash() -> None:
    """A chat body of lists nested 600 deep (1.2 KB) passed the edge and made the demo's
    recursive count fail: a 500 and an unbilled stream."""
    nested: Any = "three words here"
    for _ in range(5_000):
        nested = [nested]
    assert prompt_words({"model": "demo", "messages": nested}) == 3


HELLO = [{"role": "user", "content": "hello there"}]


@pytest.mark.parametrize(("limit", "finish"), [(3, "length"), (500, "stop"), (None, "stop")])
async def test_an_answer_cut_by_max_tokens_says_length(limit: int | None, finish: str) -> None:
    """The demo said ``stop`` however short ``max_tokens`` cut its answer."""
    extra: dict[str, Any] = {"max_tokens": limit} if limit else {}
    demo = Demo()
    chat = json.loads((await demo.complete(demo_call("chat", messages=HELLO, **extra))).body)
    assert chat["choices"][0]["finish_reason"] == finish
    text = json.loads((await demo.complete(demo_call("complete", prompt="hi", **extra))).body)
    assert text["choices"][0]["finish_reason"] == finish
    events = [e async for e in demo.stream(demo_call("chat", stream=True, messages=HELLO, **extra))]
    last = json.loads(events[-2].payload or b"{}")  # the chunk before the usage one
    assert last["choices"][0]["finish_reason"] == finish
    if limit == 3:
        assert len(chat["choices"][0]["message"]["content"].split()) == 3


@pytest.mark.parametrize("empty", [[], ""])
async def test_nothing_to_embed_is_a_400_naming_input(empty: Any) -> None:
    """An empty list answered 200 with no data: the SDK raised "No embedding data received"."""
    with pytest.raises(InvalidRequest) as refused:
        await Demo().complete(demo_call("embed", input=empty))
    assert refused.value.param == "input"


async def test_a_prompt_array_and_n_get_one_choice_each_in_openais_order() -> None:
    """LangChain's ``OpenAI(...).batch()`` sends a prompt array and reads a choice per
    prompt: the demo answered one choice for all, and LangChain raised IndexError."""
    demo = Demo()
    body = json.loads((await demo.complete(demo_call("complete", prompt=["a b", "c d"], n=2))).body)
    texts = [c["text"] for c in body["choices"]]
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert [t.endswith("You said: a b") for t in texts] == [True, True, False, False]
    assert texts[2].endswith("You said: c d")
    words = sum(len(t.split()) for t in texts)
    assert body["usage"]["completion_tokens"] == words
    chat = json.loads((await demo.complete(demo_call("chat", messages=HELLO, n=3))).body)
    assert len(chat["choices"]) == 3
    assert {c["finish_reason"] for c in chat["choices"]} == {"stop"}


async def test_more_than_128_choices_in_all_is_a_400_before_any_is_built() -> None:
    demo = Demo()
    with pytest.raises(InvalidRequest) as caught:
        await demo.complete(demo_call("complete", prompt=[""] * 1_000_000, n=2))
    assert caught.value.param == "prompt"
    assert "at most 128" in caught.value.message

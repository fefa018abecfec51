"""The client's own field behind each field of a translated chat request: what a provider's
error ``param`` is told as (:mod:`switchyard.dialects.chat_fields`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import pytest

from switchyard.dialects import anthropic, responses
from switchyard.dialects.chat_fields import ChatFields, told_for_client
from switchyard.errors import InvalidRequest
from switchyard.workers.modelproxy.dialects import MAX_NOTED, fields_of
from switchyard.workers.modelproxy.providers import litellm_params
from tests.unit.demo_calls import demo_call

RESPONSES = {
    "model": "m",
    "instructions": "be brief",
    "input": [
        {"role": "user", "content": "hi"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"role": "developer", "content": "a note inside the tool run"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "https://example.com/a.png"},
            ],
        },
        {"type": "custom_tool_call", "call_id": "c2", "name": "patch", "input": "*** x"},
    ],
    "tools": [
        {"type": "function", "name": "f", "parameters": {"type": "object"}},
        {"type": "custom", "name": "patch"},
    ],
    "text": {"format": {"type": "json_schema", "name": "n", "schema": {}}},
}


@pytest.mark.parametrize(
    ("chat", "own"),
    [
        ("messages[0].content", "instructions"),
        ("messages[1].content", "input[0].content"),
        ("messages.1.content", "input[0].content"),  # the pydantic servers' spelling
        ("messages[2].tool_calls[0].function.arguments", "input[1].arguments"),
        ("messages[2].tool_calls[0].id", "input[1].call_id"),
        # the developer message moved after the tool run it came inside
        ("messages[3].content", "input[3].output"),
        ("messages[3].tool_call_id", "input[3].call_id"),
        ("messages[4].content", "input[2].content"),
        ("messages[5].content[1].image_url.url", "input[4].content[1].image_url"),
        ("messages[5].content[0].text", "input[4].content[0].text"),
        ("messages[6].tool_calls[0].function.arguments", "input[5].input"),
        ("messages[40].content", "input"),  # past the end: the whole list
        ("max_completion_tokens", "max_output_tokens"),
        ("max_tokens", "max_output_tokens"),
        ("tools[0].function.name", "tools[0].name"),
        ("tools[0].function.parameters.properties", "tools[0].parameters"),
        ("tools[1].function.parameters", "tools[1]"),  # a custom tool's are Switchyard's own
        ("response_format.json_schema.schema", "text.format.schema"),
        ("stream_options", None),
        ("top_k", None),
        ("messages..content", None),
    ],
)
def test_responses_fields(chat: str, own: str | None) -> None:
    assert responses.chat_fields(RESPONSES).client_param(chat) == own


MESSAGES = {
    "model": "m",
    "max_tokens": 16,
    "system": "be brief",
    "stop_sequences": ["END"],
    "metadata": {"user_id": "u"},
    "messages": [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "r"},
                {"type": "text", "text": "and"},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a"}},
            ],
        },
    ],
    "tools": [{"name": "f", "input_schema": {"type": "object"}}],
    "output_config": {"format": {"type": "json_schema", "schema": {}}},
}


@pytest.mark.parametrize(
    ("chat", "own"),
    [
        ("messages[0].content", "system"),
        ("messages[1].content", "messages[0].content"),
        ("messages[2].content", "messages[1].content"),
        ("messages[2].tool_calls[0].function.arguments", "messages[1].content[1].input"),
        ("messages[3].content", "messages[2].content[0].content"),
        ("messages[3].tool_call_id", "messages[2].content[0].tool_use_id"),
        ("messages[4].content[0].text", "messages[2].content[1].text"),  # two turns merged
        ("messages[4].content[2].image_url.url", "messages[3].content[1].source"),
        ("messages[4].content", "messages"),  # two turns: no one field
        ("max_tokens", "max_tokens"),
        ("stop[0]", "stop_sequences"),
        ("user", "metadata.user_id"),
        ("tools[0].function.parameters", "tools[0].input_schema"),
        ("response_format.json_schema.schema", "output_config.format.schema"),
        ("stream_options", None),
    ],
)
def test_messages_fields(chat: str, own: str | None) -> None:
    assert anthropic.chat_fields(MESSAGES).client_param(chat) == own


def test_an_unknown_field_is_null_and_named_in_the_message() -> None:
    refused = InvalidRequest("bad value", param="stream_options.include_usage")
    told_for_client(refused, lambda: responses.chat_fields(RESPONSES))
    assert refused.param is None
    assert "`stream_options.include_usage` of the chat completions request" in refused.message
    named = InvalidRequest("bad value", param="max_tokens")
    told_for_client(named, lambda: responses.chat_fields(RESPONSES))
    assert (named.param, named.message) == ("max_output_tokens", "bad value")
    untouched = InvalidRequest("bad value")
    told_for_client(untouched, ChatFields)
    assert (untouched.param, untouched.message) == (None, "bad value")


def test_a_translation_to_send_notes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The notes cost more than the chat request (a dict of paths per message, part, call and
    tool): a request translated to be sent makes none; an error naming a field translates it
    again, noting."""

    def noted(*_: object) -> None:
        raise AssertionError("noted while translating a request to send")

    monkeypatch.setattr(ChatFields, "note", noted)
    monkeypatch.setattr(ChatFields, "request", noted)
    responses.to_chat(RESPONSES)
    anthropic.to_chat(MESSAGES)


def test_the_fields_are_noted_again_from_the_request_as_received() -> None:
    """From the bytes the call holds anyway; from the body when its item references were
    filled in (the bytes, translated again, would be refused for them). The body and the bytes
    differ here (the bytes have no instructions, shifting chat's messages by one), so which
    was read shows."""
    body: dict[str, Any] = {key: value for key, value in RESPONSES.items() if key != "model"}
    bare = {key: value for key, value in RESPONSES.items() if key != "instructions"}
    call = dataclasses.replace(demo_call("responses", **body), request=msgspec.json.encode(bare))
    assert fields_of(call)().client_param("messages[0].content") == "input[0].content"  # bytes
    given = {**RESPONSES, "input": [{"type": "item_reference", "id": "msg_1"}]}
    referenced = dataclasses.replace(call, request=msgspec.json.encode(given))
    assert fields_of(referenced)().client_param("messages[0].content") == "instructions"  # body
    body = {key: value for key, value in MESSAGES.items() if key != "model"}
    told = dataclasses.replace(demo_call("messages", **body), request=b"")
    assert fields_of(told)().client_param("messages[1].content") == "messages[0].content"


def _not_again() -> ChatFields:
    raise AssertionError("translated again")


LONGEST = "This model's maximum context length is 8192 tokens."


@pytest.mark.parametrize(
    ("said", "param", "told", "own"),
    [
        (LONGEST, "messages", LONGEST, "input"),
        ("Unsupported: 'max_tokens'", "max_tokens", "Unsupported: 'max_output_tokens'", None),
        ("'user' is too long", "user", "'user' is too long", "user"),
        ("'top_p' is not supported", None, "'top_p' is not supported", None),  # not the param
    ],
)
def test_a_top_level_field_is_named_without_translating_again(
    said: str, param: str | None, told: str, own: str | None
) -> None:
    """An error about ``messages`` as a whole (context_length_exceeded) comes with the longest
    requests: it took 70-180 ms of the event loop for 4 MB to translate one again, per
    deployment tried."""
    chat = responses.to_chat({**RESPONSES, "max_output_tokens": 5, "user": "u"}).chat
    refused = InvalidRequest(said, param=param)
    told_for_client(refused, _not_again, ChatFields.top(responses.TOP_FIELDS, chat))
    assert refused.message == told
    assert refused.param == (own or (param and responses.TOP_FIELDS[param]))


def test_a_field_in_a_message_is_named_by_the_translation_run_again() -> None:
    top = ChatFields.top(responses.TOP_FIELDS, responses.to_chat(RESPONSES).chat)
    refused = InvalidRequest("Invalid 'messages[1].content'", param="messages")
    told_for_client(refused, lambda: responses.chat_fields(RESPONSES), top)
    assert (refused.message, refused.param) == ("Invalid 'input[0].content'", "input")


def test_a_large_request_is_not_translated_again() -> None:
    """Over MAX_NOTED bytes its top-level fields alone name an error's: coarsely."""
    body: dict[str, Any] = {key: value for key, value in RESPONSES.items() if key != "model"}
    chat = responses.to_chat(RESPONSES).chat
    top = ChatFields.top(responses.TOP_FIELDS, chat, "instructions")
    large = msgspec.json.encode({**RESPONSES, "metadata": {"pad": "x" * MAX_NOTED}})
    call = dataclasses.replace(demo_call("responses", **body), request=large)
    assert fields_of(call, top)() is top
    assert top.client_param("messages[1].content") == "input"
    # The first message is the instructions, not an input item (was told `input`).
    assert top.client_param("messages[0].content") == "instructions"
    assert top.client_param("messages") == "input"
    assert top.client_param("max_completion_tokens") == "max_output_tokens"
    small = dataclasses.replace(call, request=msgspec.json.encode(RESPONSES))
    assert fields_of(small, top)().client_param("messages[1].content") == "input[0].content"


@pytest.mark.parametrize(
    ("said", "told"),
    [
        ("Invalid 'messages[1].content': too long", "Invalid 'messages[0].content': too long"),
        ("Invalid messages.1.content.", "Invalid messages[0].content."),  # pydantic's
        ("at messages.[2].tool_calls[0].id", "at messages[1].content[1].id"),
        ("'messages' must alternate", "'messages' must alternate"),  # the same field
        ("'stop' has too many items", "'stop' has too many items"),  # not the param
        ("a stop word", "a stop word"),  # a bare word, unquoted: English
        ("`max_completion_tokens` too large", "`max_completion_tokens` too large"),
        ("the user said stop", "the user said stop"),
        ("stop", "stop_sequences"),  # the whole message
        # Mistral's: a role, not the field `user`
        ("Unexpected role 'user' after role 'tool'", "Unexpected role 'user' after role 'tool'"),
    ],
)
def test_the_message_names_the_clients_fields(said: str, told: str) -> None:
    """A Messages client read ``messages[0].content: Invalid 'messages[1].content'``: two
    different turns."""
    refused = InvalidRequest(said)
    told_for_client(refused, lambda: anthropic.chat_fields(MESSAGES))
    assert (refused.message, refused.param) == (told, None)


OPENAI_MAX_TOKENS = (
    "Unsupported parameter: 'max_tokens' is not supported with this model. "
    "Use 'max_completion_tokens' instead."
)
ROLES = (
    "Invalid value: 'tool'. Supported values are: 'system', 'assistant', 'user', 'function', "
    "and 'tool'."
)
USER = "user must be at most 64 chars; identify the end user, not the user's session"
STOP = "stop: at most 4 stop sequences; generation will stop at the first"
LINK = "See https://platform.openai.com/docs/api-reference/chat/create#chat-create-max_tokens"
LONG = (
    "This model's maximum context length is 8192 tokens. However, your messages resulted in "
    "9000 tokens. Please reduce the length of the messages."
)


@pytest.mark.parametrize(
    ("said", "param", "told", "own"),
    [
        # two chat fields of one client field: rewritten, it advised the field it refused
        (OPENAI_MAX_TOKENS, "max_tokens", OPENAI_MAX_TOKENS, "max_tokens"),
        # a role in a list of values, not the field `user` (metadata.user_id)
        (ROLES, "messages[1].role", ROLES, "messages[0].role"),
        (ROLES, "user", ROLES, "metadata.user_id"),
        # the param as an English word: left alone
        (USER, "user", USER, "metadata.user_id"),
        (STOP, "stop", STOP.replace("stop:", "stop_sequences:"), "stop_sequences"),
    ],
)
def test_provider_messages_name_no_wrong_field(
    said: str, param: str | None, told: str, own: str | None
) -> None:
    """A reviewer's: quoted values were told as fields (Mistral's "Unexpected role 'user'",
    OpenAI's list of roles: 'metadata.user_id'), every English "stop" of a message whose param
    is ``stop`` became ``stop_sequences``, a link's anchor was changed, and OpenAI's advice
    named one field twice ("'max_tokens' is not supported ... Use 'max_tokens' instead")."""
    refused = InvalidRequest(said, param=param)
    told_for_client(refused, lambda: anthropic.chat_fields(MESSAGES))
    assert (refused.message, refused.param) == (told, own)


@pytest.mark.parametrize(
    ("said", "param", "told", "own"),
    [
        (f"{LINK} for max_tokens", None, f"{LINK} for max_tokens", None),
        (f"{LINK}: 'messages[1].content'", None, f"{LINK}: 'input[0].content'", None),
        (LONG, "messages", LONG, "input"),
        ("Invalid 'messages' or 'n'", None, "Invalid 'messages' or 'n'", None),
        ("Invalid 'messages', 'stop'", None, "Invalid 'messages', 'stop'", None),
    ],
)
def test_responses_messages_name_no_wrong_field(
    said: str, param: str | None, told: str, own: str | None
) -> None:
    """A link's anchor is no field (``#chat-create-max_tokens``); the param in prose is
    English ("your messages resulted in")."""
    refused = InvalidRequest(said, param=param)
    told_for_client(refused, lambda: responses.chat_fields(RESPONSES))
    assert (refused.message, refused.param) == (told, own)


def test_a_bare_param_is_rewritten_only_when_the_client_sent_it() -> None:
    body = {key: value for key, value in MESSAGES.items() if key != "metadata"}
    refused = InvalidRequest("'user' is too long", param="user")
    told_for_client(refused, lambda: anthropic.chat_fields(body))
    assert refused.message == "'user' is too long"
    sent = InvalidRequest("'user' is too long", param="user")
    told_for_client(sent, lambda: anthropic.chat_fields(MESSAGES))
    assert sent.message == "'metadata.user_id' is too long"
    said = "Unsupported parameter: 'max_tokens' is not supported with this model."
    alone = InvalidRequest(said, param="max_tokens")  # chat's is max_completion_tokens
    told_for_client(alone, lambda: responses.chat_fields({**RESPONSES, "max_output_tokens": 5}))
    assert alone.message == said.replace("'max_tokens'", "'max_output_tokens'")


def test_the_message_names_the_param_as_the_client_knows_it() -> None:
    refused = InvalidRequest("Invalid value for stop: a list", param="stop")
    told_for_client(refused, lambda: anthropic.chat_fields(MESSAGES))
    assert (refused.param, refused.message) == (
        "stop_sequences",
        "Invalid value for stop_sequences: a list",
    )
    body = anthropic.error_body(refused)
    assert b'"message":"Invalid value for stop_sequences: a list"' in body  # named: not led


def test_litellms_refusals_name_the_clients_fields() -> None:
    """litellm names the chat fields it refuses (``reasoning_effort``: a Responses client's
    ``reasoning.effort``), in its list or in a sentence."""
    body = {**RESPONSES, "reasoning": {"effort": "low"}, "text": {"verbosity": "low"}}
    one = litellm_params.refusal("p", "m", ["reasoning_effort"], "")
    told_for_client(one, lambda: responses.chat_fields(body))
    assert one.param == "reasoning.effort"
    assert one.message.startswith("`reasoning.effort`: provider p does not take this field")
    # a list of quoted words is never rewritten (values, as often as fields): the param is
    listed = litellm_params.refusal("p", "m", ["reasoning_effort", "verbosity"], "")
    told_for_client(listed, lambda: responses.chat_fields(body))
    assert listed.param == "reasoning.effort"
    assert listed.message.startswith("`reasoning_effort`, `verbosity`: provider p does not")
    # an unquoted word that is not the param: left as the provider said it
    said = "litellm.UnsupportedParamsError: m only supports top_p when reasoning_effort is none"
    sentence = litellm_params.refusal("p", "m", [], said)
    told_for_client(sentence, lambda: responses.chat_fields(body))
    assert sentence.param is None
    assert sentence.message.endswith("m only supports top_p when reasoning_effort is none")


def test_an_error_naming_no_field_translates_nothing_again() -> None:
    def noting() -> ChatFields:
        raise AssertionError("translated again")

    for said in ("Rate limit reached for model m", "the stream was cut", "stop the user"):
        told_for_client(InvalidRequest(said), noting)


@pytest.mark.parametrize(
    ("message", "param", "led"),
    [
        ("Invalid 'messages[1].content'", "messages", True),  # a coarser field: not named
        ("Invalid 'messages[0].content'", "messages[0].content", False),
        ("Invalid messages.", "messages", False),
        ("stop_sequences: too many", "stop", True),
    ],
)
def test_a_messages_error_is_led_by_a_param_it_does_not_name(
    message: str, param: str, led: bool
) -> None:
    body = anthropic.error_body(InvalidRequest(message, param=param))
    shown = msgspec.json.decode(body)["error"]["message"]
    assert shown == (f"{param}: {message}" if led else message)


CALLED = {
    "model": "m",
    "input": [
        {"role": "user", "content": "hi"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "."}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "a"},
        {"type": "function_call_output", "call_id": "c2", "output": "b"},
        {"type": "function_call", "call_id": "c3", "name": "f", "arguments": "{}"},
    ],
}


@pytest.mark.parametrize(
    ("chat", "own"),
    [
        # two calls appended to the assistant's text item: its calls are no one item's
        ("messages[1].tool_calls", "input"),
        ("messages.[1].role", "input"),
        ("messages[1].tool_calls[1].function.arguments", "input[3].arguments"),
        ("messages[1].content", "input[1].content"),
        ("messages[1]", "input"),  # three items
        ("messages[1].name", "input"),  # no field of it: not its text's item
        # a message made for a call alone
        ("messages[4].tool_calls", "input[6]"),
        ("messages[4].content", "input[6]"),
        ("messages[4]", "input[6]"),
    ],
)
def test_calls_merged_into_an_assistant_message(chat: str, own: str) -> None:
    assert responses.chat_fields(CALLED).client_param(chat) == own


def _called(*calls: str, text: bool = False) -> dict[str, Any]:
    said = [{"type": "message", "role": "assistant", "content": "."}] if text else []
    made = [{"type": "function_call", "call_id": c, "name": "f", "arguments": "{}"} for c in calls]
    return {"model": "m", "input": [{"role": "user", "content": "hi"}, *said, *made]}


@pytest.mark.parametrize(
    ("body", "chat", "own"),
    [
        (_called("c1", text=True), "messages[1].tool_calls", "input[2]"),  # its one call
        (_called("c1", text=True), "messages[1].role", "input[2]"),
        (_called("c1", "c2"), "messages[1].role", "input"),  # no one call's (was input[1])
        (_called("c1", "c2"), "messages[1].tool_calls", "input"),
        (_called("c1", "c2"), "messages[1].content", "input"),
        (_called("c1", "c2"), "messages[1].tool_calls[1].id", "input[2].call_id"),
    ],
)
def test_a_message_of_several_calls_is_no_one_calls(body: Any, chat: str, own: str) -> None:
    assert responses.chat_fields(body).client_param(chat) == own


TEXTS = {  # Claude Code's usual shape: turns of several text blocks
    "model": "m",
    "max_tokens": 16,
    "system": [{"type": "text", "text": "you are"}, {"type": "text", "text": "an agent"}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>...</system-reminder>"},
                {"type": "text", "text": "fix it"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "looking"},
                {"type": "text", "text": ""},  # left out
                {"type": "text", "text": "now"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "is_error": True,
                    "content": [{"type": "text", "text": "no"}, {"type": "text", "text": "such"}],
                }
            ],
        },
    ],
}


@pytest.mark.parametrize(
    ("chat", "own"),
    [
        ("messages[0].content[1].text", "system[1].text"),
        ("messages[1].content[1].text", "messages[0].content[1].text"),
        ("messages[1].content[0]", "messages[0].content[0]"),
        ("messages[1].role", "messages[0].role"),
        ("messages[1].content", "messages[0].content"),
        ("messages[2].content[1].text", "messages[1].content[2].text"),
        ("messages[3].content[1].text", "messages[2].content[0].content[1].text"),
    ],
)
def test_texts_of_several_blocks_keep_their_fields(chat: str, own: str) -> None:
    """``text_content`` makes new parts of several texts: each is named as its block."""
    assert anthropic.chat_fields(TEXTS).client_param(chat) == own


PARTS = {
    "model": "m",
    "input": [
        {"role": "developer", "content": [{"type": "input_text", "text": "a"}] * 2},
        {"role": "user", "content": [{"type": "input_text", "text": "b"}] * 2},
        {"role": "assistant", "content": [{"type": "output_text", "text": "c"}] * 2},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {
            "type": "function_call_output",
            "call_id": "c1",
            "output": [{"type": "input_text", "text": "d"}] * 2,
        },
    ],
}


@pytest.mark.parametrize(
    ("chat", "own"),
    [
        ("messages[0].content[1].text", "input[0].content[1].text"),
        ("messages[1].content[1].text", "input[1].content[1].text"),
        ("messages[2].content[1]", "input[2].content[1]"),
        ("messages[3].content[1].text", "input[4].output[1].text"),
    ],
)
def test_responses_texts_of_several_parts_keep_their_fields(chat: str, own: str) -> None:
    assert responses.chat_fields(PARTS).client_param(chat) == own


MERGED = {  # an assistant turn given as a string, then one of blocks: merged into one message
    "model": "m",
    "max_tokens": 16,
    "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Sure thing"},
        {"role": "assistant", "content": [{"type": "text", "text": "More"}]},
        {"role": "user", "content": "go"},
    ],
}


@pytest.mark.parametrize(
    ("chat", "own"),
    [
        ("messages[1].content[0].text", "messages[1].content"),  # the string itself
        ("messages[1].content[0]", "messages[1].content"),
        ("messages[1].content[1].text", "messages[2].content[0].text"),
        ("messages[1].content", "messages"),  # two turns
    ],
)
def test_a_string_turn_merged_with_blocks_keeps_its_parts(chat: str, own: str) -> None:
    """A string's path was no text path: the parts paired off by one (the string's part told
    as the next turn's block, the block's as the whole list)."""
    assert anthropic.chat_fields(MERGED).client_param(chat) == own


def test_a_provider_in_a_format_of_its_own_has_its_paths_left_alone() -> None:
    """Reached through litellm in its own format (Bedrock, Anthropic), a provider counts turns
    its own way (no system message, merged turns): "messages.1.content.0" of it was told as
    the chat request's turn, a wrong one. Its indexed paths are left, its param null; a
    top-level field is still the client's."""
    said = "ContentBlock object at messages.1.content.0 is blank"
    refused = InvalidRequest(said, param="messages.1.content.0")
    told_for_client(refused, lambda: anthropic.chat_fields(MESSAGES), numbered=False)
    assert refused.param is None
    assert refused.message.startswith(said)
    limited = InvalidRequest("'max_completion_tokens' is too large", param="max_completion_tokens")
    told_for_client(limited, lambda: responses.chat_fields(RESPONSES), numbered=False)
    assert limited.param == "max_output_tokens"


def test_a_message_echoing_a_long_request_is_left_as_it_came() -> None:
    """A server echoing the refused request in its 400 (thousands of quoted words a client
    chose): searching it took seconds of the event loop; past 8 KiB it is not searched."""
    said = "Invalid 'messages[1].content': " + "{'role': 'user'}, " * 2000
    refused = InvalidRequest(said)
    told_for_client(refused, lambda: anthropic.chat_fields(MESSAGES))
    assert refused.message == said

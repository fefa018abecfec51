"""Where the fields of a translated chat request came from in the client's own request.

A provider refusing a translated request names the chat field at fault in its error's ``param``
(``messages[0].content``, ``max_tokens``, ``tools[0].function.name``), which names nothing, or
the wrong thing, in the Responses or Messages request the client sent: the instructions (or
``system``) are chat's first message, consecutive Anthropic turns are merged into one, a
Responses tool call or its output is an ``input`` item of its own. So the translators note, for
each object they build (the request, a message, a content part, a tool call, a tool), which of
the client's fields its own fields came from (:meth:`ChatFields.note`), and a provider's
``param`` is walked through the chat request to the deepest object noted on its way and named
by that note (:meth:`ChatFields.client_param`): ``messages[3].tool_calls[0].function.arguments``
becomes ``input[4].arguments``, ``max_tokens`` ``max_output_tokens``. A field with no known
origin (``stream_options``, which the translation adds) is told as ``null``, the message saying
which chat field the provider named (:func:`told_for_client`). The chat fields the provider's
message names are rewritten the same way, conservatively (a wrong field named is worse than
the chat field): a path (``Invalid 'messages[1].content'``) or the ``param`` itself; a bare
word (``stop``, ``user``: English words too) only when it is the whole message, or is the
param quoted or leading (``'stop'``, ``stop:``) and the client sent that field; never a value
of a quoted list (``'system', 'assistant', 'user'``) nor a word of a link; and the message is
left alone when two different chat fields in it name one field of the client's.

Objects are noted by identity: the note keeps each alive, so its ``id`` names it as long as the
notes live, and the messages reordered to keep tool runs whole keep their notes. Nothing is
noted while a request is translated to be sent: the notes cost more than the chat request
itself (a dict of paths per message, part, call and tool), and only an error naming a field
needs them, so the translation is run again, noting, then (it is deterministic).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from switchyard.errors import ApiError

# A chat field as providers name it: ``messages[0].content``, ``messages.0.content`` (the
# pydantic servers' spelling), ``max_tokens``.
_SEGMENT = re.compile(r"\.?(?:\[(\d+)\]|([^.\[\]]+))")
_MAX_PARAM = 256  # a longer param is no field of a request this translation wrote
_MAX_SAID = 120  # of an unmapped param, what the message repeats
# A chat field named in a provider's message, in any of the spellings above (and
# ``messages.[0]``), standing alone: not part of a longer name or path.
_MENTION = re.compile(
    r"(?<![\w.\[\]])(?P<path>(?P<name>[A-Za-z_]\w*)(?:\.?\[\d+\]|\.\d+\b|\.[A-Za-z_]\w*)*)"
    r"(?![\w\[])"
)
_QUOTES = frozenset("'\"`")
_NAME = re.compile(r"[A-Za-z_]\w*")
_INDEXED = re.compile(r"\[|\.\d")  # a path into a list: ``messages[1]``, ``messages.1``
_LINK = re.compile(r"\S+://\S+")
# A quoted word with another quoted one beside it: a list of values (``'system', 'user'``).
_LISTED_AFTER = re.compile(r"\s*(?:,\s*(?:(?:and|or)\s+)?|(?:and|or)\s+)['\"`]")
# How far back a quoted word's list is looked for: from the message's start, every quoted word
# scanned it all (a review: 12.6 s of the event loop for a 256 KiB message of 6,000 of them).
_LOOKBEHIND = 32
# The longest provider message searched for chat fields to rewrite (a longer one is left as
# it came: a server echoing the refused request back in its 400).
_SEARCHED = 8192
_LISTED_BEFORE = re.compile(r"['\"`]\s*(?:,\s*(?:(?:and|or)\s+)?|(?:and|or)\s+)$")
# Chat completions' top-level request fields: the only names a message is searched for.
CHAT_FIELDS = frozenset(
    {
        *("messages", "model", "tools", "tool_choice", "parallel_tool_calls", "functions"),
        *("max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "n", "seed"),
        *("frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "top_logprobs"),
        *("response_format", "reasoning_effort", "verbosity", "user", "metadata", "store"),
        *("stream", "stream_options", "service_tier", "prompt_cache_key", "safety_identifier"),
        *("modalities", "audio", "prediction", "web_search_options"),
    }
)


class ChatFields:
    """The client's fields behind a translated chat request's objects (see the module
    docstring). Filled in while the request is translated; read when its provider refuses it."""

    def __init__(self) -> None:
        self._notes: dict[int, tuple[object, Mapping[str, str]]] = {}
        self._root: object = None

    def note(self, obj: object, fields: Mapping[str, str]) -> None:
        """Notes that ``obj``'s fields came from ``fields``: a chat path relative to ``obj``
        (``""`` for ``obj`` itself, ``content``, ``function.name``) -> the client's field."""
        self._notes[id(obj)] = (obj, fields)

    def parts(self, content: object, sources: Sequence[object]) -> None:
        """Notes the parts of ``content`` (``text_content`` of ``sources``' texts, which makes
        new parts) as their sources: a part noted before, or the path of a text block
        (``content[1]``), or of a content given as a string (``messages[1].content``: the
        part's text is that string)."""
        if not isinstance(content, list):
            return  # one text: the message's own content
        for part, source in zip(content, sources, strict=False):
            if isinstance(source, str) and not source.endswith("]"):
                self.note(part, {"": source, "text": source})
            elif isinstance(source, str):
                self.note(part, {"": source, "type": f"{source}.type", "text": f"{source}.text"})
            elif self.noted(source):
                self.note(part, self.noted(source))

    @classmethod
    def top(
        cls, fields: Mapping[str, str], chat: Mapping[str, Any], first: str | None = None
    ) -> ChatFields:
        """The top-level fields alone of a chat request ``chat`` whose origins are ``fields``:
        what answers an error naming one (``messages``, ``max_tokens``) without the
        translation run again, and any other coarsely (``messages[3].content``: ``input``).
        ``first``: the client's field its first message came from (``instructions``,
        ``system``), so that one is not named coarsely as an input item (a review: an 11 MB
        ``instructions`` refused as too long was told ``input``)."""
        noted = cls()
        root: dict[str, Any] = dict.fromkeys(chat)
        if first and chat.get("messages"):
            lead: dict[str, Any] = {}
            root["messages"] = [lead]
            noted.note(lead, {"": first, "content": first})
        noted.request(root, fields)
        return noted

    def names(self, path: str) -> bool:
        """Whether ``path`` is one top-level field whose origin is noted of the request."""
        return _NAME.fullmatch(path) is not None and path in self.noted(self._root)

    def noted(self, obj: object) -> Mapping[str, str]:
        """What is noted of ``obj`` (nothing: empty)."""
        found = self._notes.get(id(obj))
        return found[1] if found is not None and found[0] is obj else {}

    def field_of(self, obj: object, relative: str) -> str | None:
        """The client's field noted for ``obj``'s ``relative`` field."""
        return self.noted(obj).get(relative)

    def request(self, chat: dict[str, Any], fields: Mapping[str, str]) -> None:
        """Notes the chat request itself: its top-level fields' origins."""
        self.note(chat, fields)
        self._root = chat

    def sent(self, name: str) -> bool:
        """Whether the chat request has a top-level field naming the client's field ``name``
        names (``max_tokens`` for ``max_completion_tokens``): the client sent that field."""
        own = self.client_param(name)
        root = self._root if isinstance(self._root, dict) else {}
        return own is not None and any(self.client_param(key) == own for key in root)

    def client_param(self, param: str) -> str | None:
        """The client's field behind the chat field ``param`` names, or None when unknown."""
        tokens = _tokens(param)
        if not tokens:
            return None
        noted: list[tuple[Mapping[str, str], int]] = []  # notes met on the way, and where
        obj: Any = self._root
        for depth in range(len(tokens) + 1):
            found = self._notes.get(id(obj))
            if found is not None and found[0] is obj:
                noted.append((found[1], depth))
            if depth == len(tokens):
                break
            token = tokens[depth]
            found_list = isinstance(obj, list) and isinstance(token, int) and token < len(obj)
            if not (found_list or (isinstance(obj, dict) and token in obj)):
                break
            obj = obj[token]
        for fields, depth in reversed(noted):
            rest = tokens[depth:]
            # An object's own field ("") names what it names only when nothing is left of the
            # path: a field of it that is not noted is not the whole object's (an assistant
            # message's `tool_calls` are not its text's item); the object around it may know.
            for end in range(len(rest), 0 if rest else -1, -1):
                field = fields.get(_relative(rest[:end]))
                if field is not None:
                    return field
        return None


def told_for_client(
    exc: ApiError,
    fields: Callable[[], ChatFields],
    top: ChatFields | None = None,
    *,
    numbered: bool = True,
) -> None:
    """``exc`` (a provider's answer to the translated request) made to name the client's own
    field in its ``param`` and its message; when the param's is not known, ``param`` is null
    and the message says which chat field the provider named. ``fields`` is asked only when
    the error names a field (it runs the translation again), and not when ``top`` (the
    request's top-level fields: :meth:`ChatFields.top`) knows every field it names: an error
    about ``messages`` as a whole (``context_length_exceeded``) comes with the longest
    requests, the ones most costly to translate again. ``numbered``: False for a provider
    reached through litellm in a format of its own (Bedrock's, Anthropic's), whose paths count
    turns in its own way (no system message, merged turns): an indexed path of it is not read
    as the chat request's (a review: a Bedrock "messages.1.content.0" was told as the turn
    before); its top-level fields still are."""
    said = exc.param
    mentions = _mentions(exc.message, said)
    if not numbered:
        mentions = [match for match in mentions if not _INDEXED.search(match.group("path"))]
        if said and _INDEXED.search(said):
            exc.param, said = None, None
            exc.message = f"{exc.message} (a field the provider named in its own request format)"
            exc.args = (exc.message,)
    if not said and not mentions:
        return
    named = [said] if said else []
    named += [match.group("path") for match in mentions]
    noted = top if top is not None and all(map(top.names, named)) else fields()
    if mentions:
        exc.message = _rewritten(exc.message, mentions, said, noted)
        exc.args = (exc.message,)
    if not said:
        return
    exc.param = noted.client_param(said)
    if exc.param is None:
        shown = said if len(said) <= _MAX_SAID else said[: _MAX_SAID - 3] + "..."
        exc.message = (
            f"{exc.message} (the provider named `{shown}` of the chat completions request "
            "this request was translated into)"
        )
        exc.args = (exc.message,)


def _mentions(message: str, param: str | None) -> list[re.Match[str]]:
    """The chat fields ``message`` names outside its links; none when none of them may be
    rewritten (:func:`_rewritable`), nor in a message longer than :data:`_SEARCHED` (an
    error echoing the request back, thousands of quoted words a client chose)."""
    if len(message) > _SEARCHED:
        return []
    links = [match.span() for match in _LINK.finditer(message)]
    found = []
    for match in _MENTION.finditer(message):
        start, end = match.span()
        if match.group("name") in CHAT_FIELDS and not any(
            left <= start and end <= right for left, right in links
        ):  # (``#chat-create-max_tokens`` names a page)
            found.append(match)
    return found if any(_rewritable(message, match, param) for match in found) else []


def _rewritable(message: str, match: re.Match[str], param: str | None) -> bool:
    """Whether a mention may name the client's field instead: a path (``messages[1].content``,
    ``messages.1``) or the ``param`` itself; a bare word (``stop``, ``user``: English words
    too) only when it is the whole message, or is the param quoted (``'stop'``, `` `stop` ``)
    or leading (``stop:``); never a value of a quoted list (``'system', 'assistant',
    'user'``)."""
    path = match.group("path")
    start, end = match.span()
    opened = message[start - 1] if start > 0 else ""
    quoted = opened in _QUOTES and message[end : end + 1] == opened
    if quoted and (
        _LISTED_AFTER.match(message, end + 1)
        or _LISTED_BEFORE.search(message, max(0, start - _LOOKBEHIND), start - 1)
    ):
        return False
    if _INDEXED.search(path) or message.strip() == path:
        return True
    return path == param and ("." in path or quoted or message[end : end + 1] == ":")


def _rewritten(
    message: str, mentions: list[re.Match[str]], param: str | None, fields: ChatFields
) -> str:
    """``message`` with each of its rewritable ``mentions`` naming the client's field when
    known (a bare word only when the client sent that field); unchanged when two different
    mentions name one field of the client's (OpenAI's "'max_tokens' is not supported ... Use
    'max_completion_tokens'" would advise the very field it refuses)."""
    owns: dict[str, str] = {}
    for match in mentions:
        own = fields.client_param(match.group("path"))
        if own is not None and owns.setdefault(own, match.group("path")) != match.group("path"):
            return message
    out, pos = [], 0
    for match in mentions:
        path = match.group("path")
        own = fields.client_param(path)
        if own is None or own == path or not _rewritable(message, match, param):
            continue
        if not _INDEXED.search(path) and "." not in path and not fields.sent(path):
            continue
        out += [message[pos : match.start()], own]
        pos = match.end()
    return "".join(out) + message[pos:]


def _tokens(param: str) -> list[str | int] | None:
    if len(param) > _MAX_PARAM:
        return None
    tokens: list[str | int] = []
    pos = 0
    while pos < len(param):
        match = _SEGMENT.match(param, pos)
        if match is None:
            return None
        index, name = match.groups()
        if index is not None or name.isdigit():
            tokens.append(int(index if index is not None else name))
        else:
            tokens.append(name.strip())
        pos = match.end()
    return tokens


def _relative(tokens: list[str | int]) -> str:
    """A path relative to a noted object, as notes spell it: ``content[0]``, ``function.name``."""
    out = ""
    for token in tokens:
        if isinstance(token, int):
            out += f"[{token}]"
        else:
            out += f".{token}" if out else token
    return out

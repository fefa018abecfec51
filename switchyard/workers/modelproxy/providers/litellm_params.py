"""Which request fields a litellm provider may go without, and the refusal for the others.

litellm knows, per provider and model, which OpenAI request fields it can send; asked to drop
the rest (``drop_params``) it leaves them out without a word, and the answer comes back as if
the client had not sent them: 1024-number vectors for ``dimensions: 256``, no ``logprobs``
for a client that reads them, several tool calls for ``parallel_tool_calls: false``. So the
adapter calls litellm with ``drop_params`` off; litellm then refuses such a request before
sending anything (``UnsupportedParamsError``, naming the fields), and this module decides:

* a field whose value asks for nothing (:data:`_NEUTRAL`: ``frequency_penalty: 0``, ``logprobs:
  false``, ``tool_choice: "auto"``... which many client libraries send by default) or that only
  advises the provider (:data:`ADVISORY`: ``user``, ``seed``...) is left out and the call made
  again (litellm may then still refuse another);
* a refusal that names none of those is a 400 ``unsupported_parameter``, before anything is
  sent or billed, naming the fields litellm listed, or in litellm's words when it explained
  itself in a sentence (which may mention fields it does take); another deployment of the
  route may take the request (docs/routing.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from switchyard.errors import DeploymentCannotTake

# Hints a provider may ignore without changing what the answer is: an end-user id for abuse
# tracking, a best-effort seed, a service tier, a speculative-decoding draft, and the usage
# request the adapter adds to every stream (litellm counts a stream's tokens either way).
ADVISORY = frozenset({"user", "seed", "service_tier", "prediction", "stream_options"})
# Values that ask for what a provider without the field does anyway.
_NEUTRAL: dict[str, tuple[object, ...]] = {
    "frequency_penalty": (0,),
    "presence_penalty": (0,),
    "logit_bias": ({},),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "n": (1,),
    "best_of": (1,),
    "echo": (False,),
    "suffix": ("",),
    "top_p": (1,),
    "stop": ([], ""),
    "tools": ([],),
    "functions": ([],),
    "tool_choice": ("auto",),  # "none": see can_go_without
    "function_call": ("auto",),
    "parallel_tool_calls": (True,),
    "response_format": ({"type": "text"},),
    "modalities": (["text"],),
}
# litellm's class names ("litellm.UnsupportedParamsError: ", "litellm.llms...Exception"): they
# mean nothing to a client and name the gateway's internals.
_LITELLM_NAME = re.compile(r"\blitellm\.(?:\w+\.)*\w+(?:Error|Exception)\b:?\s*")
# Where litellm's message stops naming fields and starts advising its own settings.
_ADVICE = re.compile(r"\.?\s*(?:To drop |If you want to use these params)")
# The forms in which litellm's refusal lists exactly the fields it refuses: "does not support
# parameters: ['seed']" (or a dict of them) and "Setting dimensions is not supported".
_LISTED = re.compile(r"parameters: (\[[^\]]*\]|\{[^}]*\})|Setting (\w+) is not supported")


def plain(message: str) -> str:
    """litellm's ``message`` without its class names (:data:`_LITELLM_NAME`)."""
    return _LITELLM_NAME.sub("", message)


def named(message: str, sent: Iterable[str]) -> list[str]:
    """The fields of ``sent`` that litellm's refusal ``message`` mentions, in ``sent``'s order:
    in its list of refused fields, or anywhere in a sentence ("gpt-5.1 only supports
    logprobs, top_p ... when reasoning_effort resolves to 'none'" mentions fields it takes
    too). Its advice after the names is skipped."""
    return _found(_ADVICE.split(message, maxsplit=1)[0], sent)


def listed(message: str, sent: Iterable[str]) -> list[str]:
    """The fields of ``sent`` that litellm's refusal lists as the ones it refuses (none when
    it explains itself in a sentence: then no field can be blamed for sure)."""
    found = _LISTED.search(message)
    return _found(found.group(0), sent) if found is not None else []


def _found(text: str, sent: Iterable[str]) -> list[str]:
    return [field for field in sent if re.search(rf"(?<![\w.]){re.escape(field)}(?!\w)", text)]


def can_go_without(field: str, value: object, args: Mapping[str, object]) -> bool:
    """Whether leaving ``field`` out of ``args`` changes nothing the client asked for (see
    the module). ``tool_choice: "none"`` does only while no tool is offered: with tools, the
    model would be free to call one the client forbade."""
    if value is None or field in ADVISORY:
        return True
    if field in ("tool_choice", "function_call") and value == "none":
        return not args.get("tools") and not args.get("functions")
    return any(_same(value, neutral) for neutral in _NEUTRAL.get(field, ()))


def _same(value: object, neutral: object) -> bool:
    # 0 == False and 1 == True in Python; a boolean and a number are different requests here.
    if isinstance(value, bool) != isinstance(neutral, bool):
        return False
    return value == neutral


def refusal(provider: str, model: str, fields: list[str], said: str) -> DeploymentCannotTake:
    """The client's 400 for ``fields`` the provider cannot take (``said``: litellm's words,
    used only when it named no field of the request). Another deployment of the route may
    take them (:class:`~switchyard.errors.DeploymentCannotTake`)."""
    if not fields:
        reason = plain(_ADVICE.split(said, maxsplit=1)[0]).strip()
        return DeploymentCannotTake(
            f"provider {provider} cannot take this request for model {model}: {reason}",
            code="unsupported_parameter",
        )
    listed = ", ".join(f"`{field}`" for field in fields)
    one = len(fields) == 1
    return DeploymentCannotTake(
        f"{listed}: provider {provider} does not take {'this field' if one else 'these fields'}"
        f" for model {model}, and the answer would come back as if "
        f"{'it was' if one else 'they were'} not sent; remove {'it' if one else 'them'}, or "
        f"use a model that takes {'it' if one else 'them'}",
        param=fields[0],
        code="unsupported_parameter",
    )


def without(args: Mapping[str, object], fields: Iterable[str]) -> dict[str, object]:
    """``args`` less ``fields``: the call made again after a refusal of fields it can go without."""
    gone = set(fields)
    return {key: value for key, value in args.items() if key not in gone}

"""What litellm would send a provider other than the client asked, caught before it is called.

:mod:`.litellm_params` handles the fields litellm refuses itself. The adapter passes litellm
only the OpenAI fields it lists (its ``_PARAMS``), so any other field would be left out
unseen: :func:`unknown` refuses it, naming it, except the few only OpenAI's own platform acts
on (:data:`IGNORED`); ``safety_identifier`` goes on as the end-user id (:func:`end_user`).
Some fields litellm takes and then leaves out, or changes, without a word, per provider
(litellm's request transformations):

* Anthropic has no JSON mode: litellm sends nothing for ``response_format: {"type":
  "json_object"}`` (it maps a JSON schema only, to a structured output or a forced tool), and
  the answer is free text. Refused, naming ``response_format.type``.
* A JSON schema in ``response_format`` beside the client's tools, to a Claude model without
  structured output that litellm would answer through a tool of its own: litellm forces that
  tool (``tool_choice``), so the client's tools are never called. Refused, naming
  ``response_format`` (:func:`_forced_json_tool`).

A tool's ``strict: true`` (arguments that always follow its schema) reaches neither Anthropic
nor Gemini, and is not refused: OpenAI's Agents SDK marks every tool strict, and refusing it
made that SDK unusable on those providers; the schema still goes, the arguments are not held
to it (docs/routing.md says so).

``parallel_tool_calls: false`` is not refused either, though Gemini has no such setting
(litellm sends it nothing): the answer keeps its first tool call
(:func:`.litellm_answer.completion`), as OpenAI's would hold one.

Anthropic needs ``max_tokens`` on every request; for a client that sent none litellm puts
the model's output limit from its bundled price map, and 128,000 for a model missing from it,
which Anthropic refuses for any model whose limit is lower (8,192 for Claude 3.5 Haiku): every
such request failed. A model litellm does not know gets :data:`UNMAPPED_CLAUDE_MAX_TOKENS`
instead, the lowest limit of any Claude model (:func:`_output_cap`).

``tool_choice`` is checked alike for every provider (:func:`_tool_choice`): litellm sent
Anthropic no choice for a value it did not know, answered 200, and refused it for Gemini in
its own words. Each refusal is a 400 before anything is sent or billed; those of a field the
provider has no place for (all but ``tool_choice``'s) are
:class:`~switchyard.errors.DeploymentCannotTake`, which another deployment of the route may
take (the model-proxy hands the request to the heads: docs/routing.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from switchyard.errors import DeploymentCannotTake, InvalidRequest
from switchyard.workers.modelproxy.providers import litellm_params
from switchyard.workers.modelproxy.providers.base import ProviderCall

# Fields only OpenAI's own platform acts on: its stored completions (``store``) and their tags
# (``metadata``), its prompt cache's routing and retention. No other provider has them, and
# the answer is the same without them, so they are left out without a word.
# ``verbosity`` only steers how long an answer is, and a Responses request's
# ``text.verbosity`` becomes it (Codex and the Agents SDK send it for gpt-5 models): refused,
# a route mixing OpenAI and litellm deployments answered it 200 or 400 by the pick.
IGNORED = frozenset(
    {"store", "metadata", "prompt_cache_key", "prompt_cache_retention", "verbosity"}
)
# The answer's cap for a Claude model litellm's map does not know, when the client set none:
# every Claude model takes 4,096 output tokens (Claude 3 Haiku no more).
UNMAPPED_CLAUDE_MAX_TOKENS = 4096


def unknown(call: ProviderCall, taken: Iterable[str]) -> None:
    """Refuse a field of the request litellm is not given (``taken``: those it is), unless it
    is :data:`IGNORED` or null: the answer would come back as if it had not been sent.

    Raises:
        InvalidRequest: ``unsupported_parameter``, naming the fields.
    """
    known = {*taken, *IGNORED, "safety_identifier"}
    left = [key for key, value in call.body.items() if value is not None and key not in known]
    if left:
        raise litellm_params.refusal(call.provider_name, call.deployment.model, left, "")


def end_user(body: dict[str, Any], args: dict[str, Any]) -> None:
    """``safety_identifier`` (OpenAI's successor to ``user``) as the end-user id litellm
    sends where the provider has one (Anthropic's ``metadata.user_id``); it wins over
    ``user``, which it replaces."""
    identifier = body.get("safety_identifier")
    if isinstance(identifier, str) and identifier:
        args["user"] = identifier


def family(lib: Any, model: str, kind: str) -> str:
    """The provider litellm will call for ``model`` (the model string given to litellm):
    ``anthropic``, ``gemini``, ``vertex_ai``... ``kind`` when litellm cannot tell."""
    try:
        return str(lib.get_llm_provider(model=model)[1])
    except Exception:  # noqa: BLE001 - litellm's own lookup failing: the route's kind says it
        return kind


def check(lib: Any, call: ProviderCall, args: dict[str, Any]) -> None:
    """Refuse what the provider behind ``args`` would silently not do, and cap an answer
    litellm would cap wrong (see the module).

    Raises:
        InvalidRequest: naming the field.
    """
    if call.op == "embed":
        return
    provider = family(lib, str(args["model"]), call.provider.kind)
    if provider == "anthropic":
        _output_cap(lib, args)
    if call.op != "chat":
        return
    _allowed_tools(args)
    _tool_choice(args.get("tool_choice"))
    if provider == "anthropic":
        _no_json_mode(call, args)
        _forced_json_tool(lib, call, args)


def _offers_tools(args: dict[str, Any]) -> bool:
    return bool(args.get("tools") or args.get("functions")) and args.get("tool_choice") != "none"


def _no_json_mode(call: ProviderCall, args: dict[str, Any]) -> None:
    fmt = args.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_object":
        return
    raise DeploymentCannotTake(
        f"`response_format.type`: provider {call.provider_name} has no JSON mode for model "
        f'{call.deployment.model} ("json_object" would be ignored and the answer come back as '
        'free text); send "json_schema" with the schema the answer must follow',
        param="response_format.type",
        code="unsupported_value",
    )


_CHOICES = ("none", "auto", "required")


def _allowed_tools(args: dict[str, Any]) -> None:
    """OpenAI's ``{"type": "allowed_tools", "allowed_tools": {"mode", "tools"}}`` (which the
    Responses translation also makes) as litellm can send it: the tools narrowed to those
    named, the choice their mode (``auto`` or ``required``).

    Raises:
        InvalidRequest: the choice is malformed, or ``required`` with no tool left.
    """
    choice = args.get("tool_choice")
    if not isinstance(choice, dict) or choice.get("type") != "allowed_tools":
        return
    spec = choice.get("allowed_tools")
    mode = spec.get("mode") if isinstance(spec, dict) else None
    listed = spec.get("tools") if isinstance(spec, dict) else None
    if mode not in ("auto", "required") or not isinstance(listed, list):
        raise InvalidRequest(
            '`tool_choice.allowed_tools` needs `mode` ("auto" or "required") and `tools`',
            param="tool_choice",
            code="invalid_value",
        )
    names = {_function_name(item) for item in listed}
    tools = args.get("tools")
    kept = [t for t in tools if _function_name(t) in names] if isinstance(tools, list) else []
    if not kept and mode == "required":
        raise InvalidRequest(
            "`tool_choice.allowed_tools` names none of the request's tools, and its mode is "
            '"required"',
            param="tool_choice",
            code="invalid_value",
        )
    if kept:
        args["tools"], args["tool_choice"] = kept, mode
    else:
        args.pop("tools", None)
        args.pop("tool_choice", None)


def _function_name(tool: object) -> object:
    function = tool.get("function") if isinstance(tool, dict) else None
    return function.get("name") if isinstance(function, dict) else None


def _tool_choice(choice: object) -> None:
    """OpenAI's values only: ``none``, ``auto``, ``required``, or an object naming a function
    (``{"type": "function", "function": {"name": ...}}``)."""
    if choice is None or choice in _CHOICES:
        return
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            return
    raise InvalidRequest(
        '`tool_choice` must be "none", "auto", "required" or '
        '{"type": "function", "function": {"name": "<a tool\'s name>"}}',
        param="tool_choice",
        code="invalid_value",
    )


def _output_cap(lib: Any, args: dict[str, Any]) -> None:
    if args.get("max_tokens") is not None or args.get("max_completion_tokens") is not None:
        return
    try:
        known = lib.get_max_tokens(_bare_model(lib, args))
    except Exception:  # noqa: BLE001 - litellm raises when its map lacks the model
        known = None
    if not isinstance(known, int):
        args["max_tokens"] = UNMAPPED_CLAUDE_MAX_TOKENS


def _bare_model(lib: Any, args: dict[str, Any]) -> str:
    """The model name litellm looks up in its map (without the ``provider/`` prefix)."""
    return str(lib.get_llm_provider(model=str(args["model"]))[0])


def _forced_json_tool(lib: Any, call: ProviderCall, args: dict[str, Any]) -> None:
    """litellm's Anthropic transformation answers a JSON schema with a structured output
    where the model has one, else with its ``json_tool_call`` tool, forced unless the model
    will think (then it is offered beside the client's). Asked here the way it decides; if
    litellm cannot be asked, the request goes on."""
    fmt = args.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not _offers_tools(args):
        return
    try:
        model = _bare_model(lib, args)
        native = lib.AnthropicConfig().uses_native_structured_output(model)
        info = importlib.import_module("litellm.llms.anthropic.common_utils").AnthropicModelInfo
        thinking = {k: args[k] for k in ("reasoning_effort", "thinking") if k in args}
        forced = info.response_format_tool_can_be_forced(model, "anthropic", thinking)
    except Exception:  # noqa: BLE001 - litellm's internals moved: go on as litellm decides
        return
    if native or not forced:
        return
    raise DeploymentCannotTake(
        f"`response_format`: model {call.deployment.model} of provider {call.provider_name} "
        "has no structured output, and a JSON schema beside tools would be answered through a "
        "tool the model is forced to call, so the request's own tools would never be called; "
        "send either the tools or the schema",
        param="response_format",
        code="unsupported_value",
    )

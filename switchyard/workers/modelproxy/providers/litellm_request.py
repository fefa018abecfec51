"""What litellm would send a provider other than the client asked, caught before it is called.

:mod:`.litellm_params` handles the fields litellm refuses itself. Some it takes and then
leaves out, or changes, without a word, per provider (litellm's request transformations):

* Gemini has no way to ask for one tool call at a time (its function calling config has a
  mode and a list of allowed functions only): litellm sends nothing for
  ``parallel_tool_calls: false``, and several calls may come back. Refused while tools are
  offered.
* Anthropic has no JSON mode: litellm sends nothing for ``response_format: {"type":
  "json_object"}`` (it maps a JSON schema only, to a structured output or a forced tool), and
  the answer is free text. Refused, naming ``response_format.type``.

Each refusal is the client's 400 before anything is sent or billed.
"""

from __future__ import annotations

from typing import Any

from switchyard.errors import InvalidRequest
from switchyard.workers.modelproxy.providers.base import ProviderCall


def family(lib: Any, model: str, kind: str) -> str:
    """The provider litellm will call for ``model`` (the model string given to litellm):
    ``anthropic``, ``gemini``, ``vertex_ai``... ``kind`` when litellm cannot tell."""
    try:
        return str(lib.get_llm_provider(model=model)[1])
    except Exception:  # noqa: BLE001 - litellm's own lookup failing: the route's kind says it
        return kind


def check(lib: Any, call: ProviderCall, args: dict[str, Any]) -> None:
    """Refuse what the provider behind ``args`` would silently not do (see the module).

    Raises:
        InvalidRequest: naming the field.
    """
    if call.op != "chat":
        return
    provider = family(lib, str(args["model"]), call.provider.kind)
    if provider == "gemini" or (provider == "vertex_ai" and "gemini" in str(args["model"])):
        _one_call_at_a_time(call, args)
    elif provider == "anthropic":
        _no_json_mode(call, args)


def _offers_tools(args: dict[str, Any]) -> bool:
    return bool(args.get("tools") or args.get("functions")) and args.get("tool_choice") != "none"


def _one_call_at_a_time(call: ProviderCall, args: dict[str, Any]) -> None:
    if args.get("parallel_tool_calls") is not False or not _offers_tools(args):
        return
    raise InvalidRequest(
        f"`parallel_tool_calls`: provider {call.provider_name} cannot limit model "
        f"{call.deployment.model} to one tool call per answer (Gemini has no such setting), "
        "so several calls could come back; leave the field out or send true, and run the "
        "calls one by one",
        param="parallel_tool_calls",
        code="unsupported_value",
    )


def _no_json_mode(call: ProviderCall, args: dict[str, Any]) -> None:
    fmt = args.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_object":
        return
    raise InvalidRequest(
        f"`response_format.type`: provider {call.provider_name} has no JSON mode for model "
        f'{call.deployment.model} ("json_object" would be ignored and the answer come back as '
        'free text); send "json_schema" with the schema the answer must follow',
        param="response_format.type",
        code="unsupported_value",
    )

"""Turn a LiteLLM proxy ``config.yaml`` into Switchyard providers, routes and secret names.

What maps: each ``model_list`` entry becomes a deployment of the route named by its
``model_name`` (several entries with one name are weighted deployments of one route); the
``litellm_params.model`` prefix picks the provider kind; ``api_base``/``api_version`` and the
key's source group deployments into providers; ``weight`` and ``max_parallel_requests`` carry
over; ``timeout`` (the whole call; LiteLLM also reads it as ``request_timeout``), defaulting
to ``litellm_settings.request_timeout`` and then to ``router_settings.timeout``, becomes the
request and stream timeouts and ``stream_timeout`` (LiteLLM's wait for a stream's first chunk)
the first-token timeout; ``fallbacks`` (router or litellm settings) become route fallbacks.
Keys never enter the route table: ``os.environ/NAME`` becomes a secret placeholder named after
the variable, and a literal key a placeholder whose value the importer can store in the
secrets service (``--apply``) without printing it. Everything else is listed
as not mapped, with the reason. Where LiteLLM fills in a value the config leaves out (an Azure
``api_version``), the import fills in the same one and lists it among the defaults it applied.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import msgspec
import yaml

from switchyard.schemas.routing import (
    Deployment,
    Provider,
    ProviderKind,
    Route,
    RouteTable,
    Timeouts,
    credential_in_url,
)

# litellm model prefix -> our provider kind
PREFIX_KINDS: dict[str, str] = {
    "openai": "openai",
    "azure": "azure",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "groq": "groq",
    "together_ai": "together",
    "ollama": "ollama",
    "ollama_chat": "ollama",
    "hosted_vllm": "vllm",
    "vllm": "vllm",
    "mistral": "mistral",
    "cohere": "cohere",
    "cohere_chat": "cohere",
    "bedrock": "bedrock",
}
_SAFE = re.compile(r"[^a-z0-9_-]+")

# What LiteLLM sends as Azure's api-version when neither the deployment, `litellm_settings`
# (litellm.api_version) nor $AZURE_API_VERSION sets one: `litellm.AZURE_DEFAULT_API_VERSION`
# (litellm/__init__.py, litellm 1.110). tests/test_import.py checks the installed litellm agrees.
LITELLM_AZURE_DEFAULT_API_VERSION = "2025-02-01-preview"


@dataclass(frozen=True)
class SecretPlaceholder:
    """A key the imported providers need. ``value`` is set only for literal keys in the file."""

    name: str
    env_var: str | None
    value: str | None = field(default=None, repr=False)


@dataclass
class ImportResult:
    """The converted table, the secrets it names, what could not be mapped, and the values
    filled in where the config relied on a LiteLLM default."""

    table: RouteTable
    secrets: list[SecretPlaceholder]
    unmapped: list[str]
    defaults: list[str] = field(default_factory=list)


def _slug(text: str) -> str:
    return _SAFE.sub("-", text.lower()).strip("-")[:50] or "provider"


def _kind_and_model(model: str) -> tuple[str, str] | None:
    prefix, sep, rest = model.partition("/")
    if sep and prefix in PREFIX_KINDS:
        return PREFIX_KINDS[prefix], rest
    if sep:
        return None
    if model.startswith("claude"):
        return "anthropic", model
    if model.startswith("gemini"):
        return "gemini", model
    return "openai", model  # litellm treats a bare name as an OpenAI model


def _secret_for(raw_key: Any, provider: str) -> SecretPlaceholder | None:
    if not raw_key:
        return None
    key = str(raw_key)
    if key.startswith("os.environ/"):
        var = key.removeprefix("os.environ/")
        return SecretPlaceholder(name=_slug(var), env_var=var)
    return SecretPlaceholder(name=f"{provider}-key", env_var=None, value=key)


# A LiteLLM config is a few hundred values; YAML aliases can make a few hundred bytes expand
# to billions (each alias repeats what it names), which converting would spell out in full.
MAX_VALUES = 100_000


class ConfigUnreadable(ValueError):
    """The text is not a LiteLLM config this importer will read (the message says why)."""


def parse_config(text: str) -> dict[str, Any]:
    """A LiteLLM proxy config from YAML text.

    Raises:
        ConfigUnreadable: not YAML, nested too deep, not a mapping with a ``model_list``, or
            expanding (through aliases) to more than :data:`MAX_VALUES` values.
    """
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigUnreadable(f"not valid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigUnreadable("nested too deeply to be a LiteLLM config") from None
    if not isinstance(doc, dict) or not doc.get("model_list"):
        raise ConfigUnreadable("no `model_list` found: expected a LiteLLM proxy config.yaml")
    if not isinstance(doc["model_list"], list):
        raise ConfigUnreadable("`model_list` is not a list of models")
    _count_values(doc)
    return doc


def _count_values(doc: Any) -> None:
    """Walk ``doc`` as converting would read it (an alias counts each time it is used), and
    stop past :data:`MAX_VALUES`; iterative, so depth costs no stack."""
    seen, stack = 0, [doc]
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise ConfigUnreadable(
                f"expands to more than {MAX_VALUES:,} values (YAML aliases?): not a LiteLLM config"
            )
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def convert_text(text: str) -> ImportResult:
    """:func:`convert` of :func:`parse_config`.

    Raises:
        ConfigUnreadable: see :func:`parse_config`.
    """
    return convert(parse_config(text))


class _Unmappable(Exception):
    """One ``model_list`` entry that cannot become a deployment, and why."""


def _text(value: Any, where: str) -> str:
    """A scalar setting as text (an unquoted date, as YAML reads `api_version: 2024-06-01`,
    as the date); a list or a mapping is not a setting."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        raise _Unmappable(f"{where}: expected a single value, got a {type(value).__name__}")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _number(value: Any, where: str, default: float, *, low: float = 0.0) -> float:
    """A finite number of at least ``low`` (``default`` when absent)."""
    if value is None or value == "":
        return default
    try:
        number = float(_text(value, where))
    except (ValueError, OverflowError):
        raise _Unmappable(f"{where}: `{str(value)[:40]}` is not a number") from None
    if not math.isfinite(number) or number < low:
        raise _Unmappable(f"{where}: `{str(value)[:40]}` is out of range (at least {low:g})")
    return number


@dataclass(frozen=True)
class _Entry:
    alias: str
    kind: str
    model: str
    api_base: str
    api_version: str
    key: str = field(repr=False)  # api_key as written: os.environ/NAME, or a literal key
    weight: float
    concurrency: int | None
    timeouts: Timeouts | None
    default_note: str = ""  # listed among the defaults applied once the entry is imported
    timed_by_default: bool = False  # its timeouts come from the config-wide default


@dataclass(frozen=True)
class _DefaultTimeout:
    """The whole-call timeout LiteLLM gives deployments that set none, and where it is set."""

    setting: str  # `litellm_settings.request_timeout` or `router_settings.timeout`
    seconds: float
    overrides: float | None = None  # a router_settings.timeout LiteLLM then does not use


def _timeouts(
    params: dict[str, Any], at: str, default: _DefaultTimeout | None
) -> tuple[Timeouts | None, bool]:
    """The deployment's timeouts from LiteLLM's, and whether the config-wide default set them.

    LiteLLM's ``timeout`` bounds the whole call (streamed or not); a deployment may spell it
    ``request_timeout``, which LiteLLM reads when ``timeout`` is absent. Without either,
    ``default`` applies (see :func:`_default_timeout`). ``stream_timeout`` bounds the wait for
    the *first chunk* of a stream, which is Switchyard's ``first_token_s``, not ``stream_s``.
    Where the config sets none, the provider's defaults apply (None).
    """
    # A 0 or empty value reads as "not set", as before; a deployment's request_timeout is read
    # only without its timeout, as LiteLLM reads it.
    own = _number(params.get("timeout") or None, f"{at}timeout", 0, low=0.001)
    if not own:
        own = _number(params.get("request_timeout") or None, f"{at}request_timeout", 0, low=0.001)
    first = _number(params.get("stream_timeout") or None, f"{at}stream_timeout", 0, low=0.001)
    fallback = default.seconds if default is not None else None
    total = own or fallback
    if not total and not first:
        return None, False
    defaults = Timeouts()
    whole = total or defaults.request_s
    first_token = first or min(whole, defaults.first_token_s)
    timeouts = Timeouts(first_token_s=first_token, request_s=whole, stream_s=whole)
    return timeouts, not own and fallback is not None


def _entry(
    raw: Any, where: str, settings_version: Any, default_timeout: _DefaultTimeout | None
) -> _Entry:
    """One ``model_list`` entry, read whole before anything is added.

    Raises:
        _Unmappable: not an entry Switchyard can serve, with the reason.
    """
    if not isinstance(raw, dict):
        raise _Unmappable(f"{where}: not a mapping")
    params = raw.get("litellm_params") or {}
    if not isinstance(params, dict):
        raise _Unmappable(f"{where}.litellm_params: not a mapping")
    alias = _text(raw.get("model_name"), f"{where}.model_name")
    model_text = _text(params.get("model"), f"{where}.litellm_params.model")
    found = _kind_and_model(model_text)
    if not alias or found is None:
        raise _Unmappable(f"{where}: provider of model `{model_text[:80]}` is not supported")
    kind, model = found
    api_base = _text(params.get("api_base") or params.get("base_url"), f"{where}.api_base")
    if api_base and credential_in_url(api_base):
        raise _Unmappable(
            f"{where}.litellm_params.api_base: carries a credential; give it as api_key instead"
        )
    if kind == "openai" and api_base:
        kind = "openai-compatible"
    api_version = _text(params.get("api_version"), f"{where}.litellm_params.api_version")
    if kind == "azure" and not api_version:
        api_version = _text(settings_version, "litellm_settings.api_version")
    note = ""
    if kind == "azure" and not api_version:
        api_version = LITELLM_AZURE_DEFAULT_API_VERSION
        note = (
            f"{where} ({alias}): no api_version; using {api_version}, LiteLLM's default "
            "(LiteLLM would prefer $AZURE_API_VERSION if its environment set one; set "
            "api_version on the provider to pin another)"
        )
    timeouts, from_default = _timeouts(params, f"{where}.litellm_params.", default_timeout)
    parallel = _number(
        params.get("max_parallel_requests"), f"{where}.litellm_params.max_parallel_requests", 0
    )
    return _Entry(
        alias=alias,
        kind=kind,
        model=model,
        api_base=api_base,
        api_version=api_version,
        key=_text(params.get("api_key"), f"{where}.litellm_params.api_key"),
        weight=_number(params.get("weight"), f"{where}.litellm_params.weight", 1),
        concurrency=int(parallel) or None,
        timeouts=timeouts,
        default_note=note,
        timed_by_default=from_default,
    )


def convert(doc: dict[str, Any]) -> ImportResult:
    """Convert a parsed LiteLLM config (see :func:`parse_config`). Never raises for content:
    problems go to ``unmapped``, an entry that cannot be read adds nothing."""
    unmapped: list[str] = []
    defaults: list[str] = []
    litellm_settings = doc.get("litellm_settings")
    settings_version = (
        litellm_settings.get("api_version") if isinstance(litellm_settings, dict) else None
    )
    default_timeout = _default_timeout(doc, unmapped)
    timed_by_default = 0
    providers: dict[str, Provider] = {}
    secrets: dict[str, SecretPlaceholder] = {}
    deployments: dict[str, list[Deployment]] = {}
    provider_ids: dict[tuple[str, str, str, str], str] = {}
    model_list = doc.get("model_list") or []
    for i, raw in enumerate(model_list if isinstance(model_list, list) else []):
        where = f"model_list[{i}]"
        try:
            entry = _entry(raw, where, settings_version, default_timeout)
        except _Unmappable as exc:
            unmapped.append(str(exc))
            continue
        signature = (entry.kind, entry.api_base, entry.key, entry.api_version)
        name = provider_ids.get(signature)
        if name is None:
            host = urlsplit(entry.api_base).hostname if entry.api_base else None
            base = entry.kind if not entry.api_base else f"{entry.kind}-{_slug(host or 'local')}"
            name = base if base not in providers else f"{base}-{len(providers) + 1}"
            provider_ids[signature] = name
            secret = _secret_for(entry.key, name)
            if secret is not None:
                secrets[secret.name] = secret
            providers[name] = Provider(
                kind=cast(ProviderKind, entry.kind),
                api_base=entry.api_base or None,
                api_version=entry.api_version or None,
                secret=secret.name if secret else None,
            )
        deployments.setdefault(entry.alias, []).append(
            Deployment(
                provider=name,
                model=entry.model,
                weight=entry.weight,
                concurrency=entry.concurrency,
                timeouts=entry.timeouts,
            )
        )
        if entry.default_note:
            defaults.append(entry.default_note)
        timed_by_default += entry.timed_by_default
        params = raw.get("litellm_params") or {}
        for limit in ("rpm", "tpm"):
            if params.get(limit):
                unmapped.append(
                    f"{where}.litellm_params.{limit}: per-deployment {limit.upper()} is not a "
                    "Switchyard setting; use client-key limits or the deployment's concurrency"
                )
    if timed_by_default and default_timeout is not None:
        defaults.append(_default_timeout_note(default_timeout, timed_by_default))
    fallbacks = _fallbacks(doc, unmapped)
    routes = {
        alias: Route(
            deployments=tuple(deps),
            fallbacks=tuple(f for f in fallbacks.get(alias, []) if f in deployments),
        )
        for alias, deps in deployments.items()
    }
    for alias, targets in fallbacks.items():
        for target in targets:
            if target not in deployments:
                unmapped.append(f"fallback {alias} -> {target}: no model named `{target}`")
    _note_unsupported(doc, unmapped)
    table = RouteTable(providers=providers, routes=routes)
    return ImportResult(
        table=table, secrets=list(secrets.values()), unmapped=unmapped, defaults=defaults
    )


def _mapping(doc: dict[str, Any], key: str) -> dict[str, Any]:
    """A section of the config, or an empty one where it is missing or not a mapping."""
    section = doc.get(key)
    return section if isinstance(section, dict) else {}


def _default_timeout(doc: dict[str, Any], unmapped: list[str]) -> _DefaultTimeout | None:
    """The whole-call timeout of deployments that set none, as LiteLLM picks it.

    LiteLLM (1.110, its router's ``_get_non_stream_timeout``) takes a deployment's own
    ``timeout``/``request_timeout`` first, then the global ``litellm.request_timeout`` when
    the config sets it (``litellm_settings.request_timeout``), then ``router_settings.timeout``;
    so a set ``request_timeout`` wins over the router's. An unusable value is listed as not
    mapped, and the next one applies.
    """
    problems: list[str] = []
    request = _seconds(doc, "litellm_settings", "request_timeout", problems)
    router = _seconds(doc, "router_settings", "timeout", problems)
    chosen: _DefaultTimeout | None = None
    if request is not None:
        chosen = _DefaultTimeout("litellm_settings.request_timeout", request, overrides=router)
    elif router is not None:
        chosen = _DefaultTimeout("router_settings.timeout", router)
    instead = (
        f"{chosen.setting} applies instead"
        if chosen is not None
        else "the deployments keep Switchyard's default timeouts"
    )
    unmapped.extend(f"{problem}; {instead}" for problem in problems)
    return chosen


def _seconds(doc: dict[str, Any], section: str, key: str, problems: list[str]) -> float | None:
    """A positive number of seconds set at ``section.key``, or None (unset, or unusable: then
    ``problems`` says why)."""
    raw = _mapping(doc, section).get(key) or None  # 0 or empty reads as "not set"
    try:
        return _number(raw, f"{section}.{key}", 0, low=0.001) or None
    except _Unmappable as exc:
        problems.append(str(exc))
        return None


def _default_timeout_note(default: _DefaultTimeout, deployments: int) -> str:
    """What the import says it filled in from the config-wide timeout."""
    note = (
        f"{default.setting} ({default.seconds:g}s): the whole-call timeout (request_s, "
        f"stream_s) of the {deployments} deployment(s) that set no timeout of their own, "
        "as LiteLLM applies it"
    )
    if default.overrides is not None:
        note += (
            f"; LiteLLM prefers it to router_settings.timeout ({default.overrides:g}s), "
            "which is therefore not used"
        )
    return note


def _fallbacks(doc: dict[str, Any], unmapped: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for section in ("router_settings", "litellm_settings"):
        items = _mapping(doc, section).get("fallbacks") or []
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                unmapped.append(f"{section}.fallbacks: entry `{str(item)[:80]}` is not a mapping")
                continue
            for alias, targets in item.items():
                listed = targets if isinstance(targets, list) else [targets] if targets else []
                found.setdefault(str(alias), []).extend(
                    str(t) for t in listed if isinstance(t, str | int | float)
                )
        for kind in ("context_window_fallbacks", "content_policy_fallbacks"):
            if _mapping(doc, section).get(kind):
                unmapped.append(f"{section}.{kind}: not supported (only error fallbacks are)")
    return found


def _note_unsupported(doc: dict[str, Any], unmapped: list[str]) -> None:
    router = _mapping(doc, "router_settings")
    strategy = router.get("routing_strategy")
    if strategy and strategy != "simple-shuffle":
        unmapped.append(
            f"router_settings.routing_strategy `{str(strategy)[:80]}`: Switchyard uses "
            "weighted choice among healthy deployments"
        )
    for key in ("cooldown_time", "allowed_fails", "num_retries"):
        if key in router:
            unmapped.append(
                f"router_settings.{key}: set routing.cooldown_s / routing.max_attempts instead"
            )
    if doc.get("general_settings"):
        unmapped.append(
            "general_settings: not imported (keys, database and UI are Switchyard's own)"
        )


def to_yaml_doc(result: ImportResult) -> dict[str, Any]:
    """The ``providers:``/``routes:`` part of a switchyard.yaml, ready to dump."""
    built: dict[str, Any] = msgspec.to_builtins(result.table)
    return {"providers": built.get("providers", {}), "routes": built.get("routes", {})}

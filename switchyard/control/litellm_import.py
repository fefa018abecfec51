"""Turn a LiteLLM proxy ``config.yaml`` into Switchyard providers, routes and secret names.

What maps: each ``model_list`` entry becomes a deployment of the route named by its
``model_name`` (several entries with one name are weighted deployments of one route); the
``litellm_params.model`` prefix picks the provider kind; ``api_base``/``api_version`` and the
key's source group deployments into providers; ``weight`` and ``max_parallel_requests`` carry
over; the timeouts map as :mod:`switchyard.control.litellm_timeouts` says (LiteLLM's per-read
stream timeout has no exact equivalent); ``fallbacks`` (router or litellm settings) become
route fallbacks. Entries with the same model and endpoint but other timeouts or concurrency
get providers of their own, as LiteLLM keeps them apart. A number may be ``os.environ/NAME``
(resolved through the ``env`` lookup the caller passes). A timeout that cannot be used is
listed and left out, and the entry is still imported; an entry Switchyard cannot serve (or
whose weight or concurrency is unusable, which would change how its route shares traffic) is
left out and listed in ``dropped`` with its route.
Keys never enter the route table: ``os.environ/NAME`` becomes a secret placeholder named after
the variable, and a literal key a placeholder whose value the importer can store in the
secrets service (``--apply``) without printing it. A provider sends that one key and nothing
else, so an entry with other credentials (AWS keys, an Azure AD token, an OpenAI
``organization``, ``extra_headers``...) is left out and listed in ``dropped``, naming them.
Any other ``litellm_params`` key the import does not read is listed for its route as
``ignored``. Everything else is listed as not mapped, with the reason. Where LiteLLM fills in
a value the config leaves out (an Azure ``api_version``), the import fills in the same one and
lists it among the defaults it applied.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import msgspec
import yaml

from switchyard.control.litellm_timeouts import (
    ConfigTimeouts,
    DeploymentTimeouts,
    EnvLookup,
    Unusable,
    config_timeouts,
    default_notes,
    deployment_timeouts,
    number,
    per_read_note,
    text_value,
)
from switchyard.schemas.routing import (
    Deployment,
    Provider,
    ProviderKind,
    Route,
    RouteTable,
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
    # (route, reason) of each entry left out whole; the reason is also in ``unmapped``
    dropped: list[tuple[str, str]] = field(default_factory=list)


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
    # A blank around a key is no part of it (the secrets service refuses one): dropped here,
    # so the CLI's and the admin UI's imports store the key as the provider takes it.
    key = str(raw_key or "").strip()
    if not key:
        return None
    if key.startswith("os.environ/"):
        var = key.removeprefix("os.environ/")
        return SecretPlaceholder(name=_slug(var), env_var=var)
    return SecretPlaceholder(name=f"{provider}-key", env_var=None, value=key)


# The litellm_params keys the import reads: each is mapped, or listed with the reason it is not.
_READ_PARAMS = frozenset(
    {
        "model",
        "api_key",
        "api_base",
        "base_url",
        "api_version",
        "weight",
        "max_parallel_requests",
        "rpm",
        "tpm",
        "timeout",
        "request_timeout",
        "stream_timeout",
    }
)
# Credentials LiteLLM sends besides (or instead of) api_key. A Switchyard provider sends its
# one stored key (api_key) and nothing else, so an entry with one of these would reach its
# provider as someone else, or unauthenticated: it is not imported, and the reason names them
# (never their values).
_CREDENTIAL_PARAMS = frozenset(
    {
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "aws_session_name",
        "aws_role_name",
        "aws_profile_name",
        "aws_web_identity_token",
        "azure_ad_token",
        "azure_ad_token_provider",
        "azure_username",
        "azure_password",
        "tenant_id",
        "client_id",
        "client_secret",
        "vertex_credentials",
        "organization",
        "extra_headers",
        "headers",
        "litellm_credential_name",
    }
)

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


def convert_text(text: str, env: EnvLookup = None) -> ImportResult:
    """:func:`convert` of :func:`parse_config`.

    Raises:
        ConfigUnreadable: see :func:`parse_config`.
    """
    return convert(parse_config(text), env)


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
    timing: DeploymentTimeouts
    notes: tuple[str, ...] = ()  # listed among the defaults applied once the entry is imported
    problems: tuple[str, ...] = ()  # settings it could not use; the entry is imported anyway


def _entry(
    raw: Any, where: str, settings_version: Any, config: ConfigTimeouts, env: EnvLookup
) -> _Entry:
    """One ``model_list`` entry, read whole before anything is added. A timeout it cannot use
    is left out (listed in ``problems``): the entry is imported with the next one that applies.

    Raises:
        Unusable: not an entry Switchyard can serve, with the reason.
    """
    if not isinstance(raw, dict):
        raise Unusable(f"{where}: not a mapping")
    params = raw.get("litellm_params") or {}
    if not isinstance(params, dict):
        raise Unusable(f"{where}.litellm_params: not a mapping")
    alias = text_value(raw.get("model_name"), f"{where}.model_name")
    model_text = text_value(params.get("model"), f"{where}.litellm_params.model")
    found = _kind_and_model(model_text)
    if not alias or found is None:
        raise Unusable(f"{where}: provider of model `{model_text[:80]}` is not supported")
    kind, model = found
    _refuse_credentials(params, kind, where)
    api_base = text_value(params.get("api_base") or params.get("base_url"), f"{where}.api_base")
    if api_base and credential_in_url(api_base):
        raise Unusable(
            f"{where}.litellm_params.api_base: carries a credential; give it as api_key instead"
        )
    if kind == "openai" and api_base:
        kind = "openai-compatible"
    api_version = text_value(params.get("api_version"), f"{where}.litellm_params.api_version")
    if kind == "azure" and not api_version:
        api_version = text_value(settings_version, "litellm_settings.api_version")
    notes: list[str] = []
    if kind == "azure" and not api_version:
        api_version = LITELLM_AZURE_DEFAULT_API_VERSION
        notes.append(
            f"{where} ({alias}): no api_version; using {api_version}, LiteLLM's default "
            "(LiteLLM would prefer $AZURE_API_VERSION if its environment set one; set "
            "api_version on the provider to pin another)"
        )
    at = f"{where}.litellm_params"
    timing = deployment_timeouts(params, at, config, env)
    problems = [f"{problem} (route {alias})" for problem in timing.problems]
    ignored = sorted(str(k)[:80] for k in params if k not in _READ_PARAMS)
    if ignored:
        problems.append(
            f"{at}: ignored: {', '.join(ignored)} (route {alias}): no Switchyard provider "
            "or deployment setting for them"
        )
    weight = number(params.get("weight"), f"{at}.weight", 1, env)
    parallel = number(params.get("max_parallel_requests"), f"{at}.max_parallel_requests", 0, env)
    return _Entry(
        alias=alias,
        kind=kind,
        model=model,
        api_base=api_base,
        api_version=api_version,
        key=text_value(params.get("api_key"), f"{at}.api_key"),
        weight=weight,
        concurrency=int(parallel) or None,
        timing=timing,
        notes=tuple(notes),
        problems=tuple(problems),
    )


def _refuse_credentials(params: dict[Any, Any], kind: str, where: str) -> None:
    """Refuse an entry that authenticates with more than ``api_key`` (see
    :data:`_CREDENTIAL_PARAMS`), naming the parameters and what to do instead.

    Raises:
        Unusable: it has one (set to anything but an empty value).
    """
    found = sorted(k for k in params if k in _CREDENTIAL_PARAMS and params[k] not in (None, ""))
    if not found:
        return
    if kind == "bedrock":
        fix = (
            "give a Bedrock API key as api_key, or remove them and give the model-proxies "
            "AWS credentials in their environment"
        )
    else:
        fix = "remove them to import the entry with api_key alone"
    raise Unusable(
        f"{where}.litellm_params: {', '.join(found)}: a Switchyard provider sends one stored "
        f"key (api_key) and no other credential or header, so the entry would reach its "
        f"provider without them; {fix}"
    )


def _alias_of(raw: Any) -> str:
    """The route an entry that could not be read was meant for, for the message."""
    name = raw.get("model_name") if isinstance(raw, dict) else None
    return str(name)[:80] if isinstance(name, str | int | float) and name != "" else "?"


@dataclass
class _Providers:
    """The providers the entries need. Entries with the same kind, base URL, key and
    api_version share one, unless the same model there is already a deployment of another
    route with other concurrency or timeouts: Switchyard gives a provider's model one queue
    and one setting, while LiteLLM keeps each entry a deployment of its own, so such an entry
    gets a provider of its own (same endpoint and key) to keep its settings."""

    providers: dict[str, Provider] = field(default_factory=dict)
    secrets: dict[str, SecretPlaceholder] = field(default_factory=dict)
    by_signature: dict[tuple[str, str, str, str], list[str]] = field(default_factory=dict)
    used: dict[tuple[str, str], tuple[str, Any]] = field(default_factory=dict)

    def place(self, entry: _Entry, where: str, notes: list[str]) -> str:
        """The provider ``entry`` is a deployment of, added when needed."""
        signature = (entry.kind, entry.api_base, entry.key, entry.api_version)
        settings = (entry.concurrency, entry.timing.timeouts)
        names = self.by_signature.setdefault(signature, [])
        for name in names:
            earlier = self.used.get((name, entry.model))
            if earlier is None or earlier[1] == settings:
                self.used.setdefault((name, entry.model), (entry.alias, settings))
                return name
        name = self._add(entry, names)
        if len(names) > 1:
            other = self.used[(names[0], entry.model)][0]
            notes.append(
                f"{where} ({entry.alias}): `{entry.model}` at the same endpoint as route "
                f"{other}, with other timeouts or concurrency; LiteLLM keeps each entry a "
                f"deployment of its own, so it gets provider `{name}` (same endpoint and key)"
            )
        self.used[(name, entry.model)] = (entry.alias, settings)
        return name

    def _free(self, base: str) -> str:
        """``base``, or ``base-N`` with the first N no provider has."""
        if base not in self.providers:
            return base
        return next(
            f"{base}-{n}" for n in itertools.count(2) if f"{base}-{n}" not in self.providers
        )

    def _add(self, entry: _Entry, names: list[str]) -> str:
        if names:
            name = self._free(names[0])
            self.providers[name] = self.providers[names[0]]
            names.append(name)
            return name
        host = urlsplit(entry.api_base).hostname if entry.api_base else None
        name = self._free(
            entry.kind if not entry.api_base else f"{entry.kind}-{_slug(host or 'local')}"
        )
        secret = _secret_for(entry.key, name)
        if secret is not None:
            self.secrets[secret.name] = secret
        self.providers[name] = Provider(
            kind=cast(ProviderKind, entry.kind),
            api_base=entry.api_base or None,
            api_version=entry.api_version or None,
            secret=secret.name if secret else None,
        )
        names.append(name)
        return name


def convert(doc: dict[str, Any], env: EnvLookup = None) -> ImportResult:
    """Convert a parsed LiteLLM config (see :func:`parse_config`). Never raises for content:
    problems go to ``unmapped``; an entry that cannot be served adds nothing and is also
    listed in ``dropped``. ``env`` resolves ``os.environ/NAME`` numbers (None: not at all)."""
    unmapped: list[str] = []
    defaults: list[str] = []
    dropped: list[tuple[str, str]] = []
    settings_version = _mapping(doc, "litellm_settings").get("api_version")
    config = config_timeouts(doc, env)
    unmapped.extend(config.problems)
    whole_by_default = stream_by_default = timed = 0
    placed = _Providers()
    deployments: dict[str, list[Deployment]] = {}
    model_list = doc.get("model_list") or []
    for i, raw in enumerate(model_list if isinstance(model_list, list) else []):
        where = f"model_list[{i}]"
        try:
            entry = _entry(raw, where, settings_version, config, env)
        except Unusable as exc:
            unmapped.append(str(exc))
            dropped.append((_alias_of(raw), str(exc)))
            continue
        name = placed.place(entry, where, defaults)
        deployments.setdefault(entry.alias, []).append(
            Deployment(
                provider=name,
                model=entry.model,
                weight=entry.weight,
                concurrency=entry.concurrency,
                timeouts=entry.timing.timeouts,
            )
        )
        defaults.extend(entry.notes)
        unmapped.extend(entry.problems)
        whole_by_default += entry.timing.whole_by_default
        stream_by_default += entry.timing.stream_by_default
        timed += entry.timing.timeouts is not None
        params = raw.get("litellm_params") or {}
        for limit in ("rpm", "tpm"):
            if params.get(limit):
                unmapped.append(
                    f"{where}.litellm_params.{limit}: per-deployment {limit.upper()} is not a "
                    "Switchyard setting; use client-key limits or the deployment's concurrency"
                )
    defaults.extend(default_notes(config, whole_by_default, stream_by_default))
    if timed:
        unmapped.append(per_read_note(timed))
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
    table = RouteTable(providers=placed.providers, routes=routes)
    return ImportResult(
        table=table,
        secrets=list(placed.secrets.values()),
        unmapped=unmapped,
        defaults=defaults,
        dropped=dropped,
    )


def _mapping(doc: dict[str, Any], key: str) -> dict[str, Any]:
    """A section of the config, or an empty one where it is missing or not a mapping."""
    section = doc.get(key)
    return section if isinstance(section, dict) else {}


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

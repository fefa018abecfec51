"""Turn a LiteLLM proxy ``config.yaml`` into Switchyard providers, routes and secret names.

What maps: each ``model_list`` entry becomes a deployment of the route named by its
``model_name`` (several entries with one name are weighted deployments of one route); the
``litellm_params.model`` prefix picks the provider kind; ``api_base``/``api_version`` and the
key's source group deployments into providers; ``weight``, ``max_parallel_requests``,
``timeout`` and ``stream_timeout`` carry over; ``fallbacks`` (router or litellm settings) become
route fallbacks. Keys never enter the route table: ``os.environ/NAME`` becomes a secret
placeholder named after the variable, and a literal key a placeholder whose value the importer
can store in the secrets service (``--apply``) without printing it. Everything else is listed
as not mapped, with the reason. Where LiteLLM fills in a value the config leaves out (an Azure
``api_version``), the import fills in the same one and lists it among the defaults it applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import msgspec

from switchyard.schemas.routing import (
    Deployment,
    Provider,
    ProviderKind,
    Route,
    RouteTable,
    Timeouts,
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


def convert(doc: dict[str, Any]) -> ImportResult:
    """Convert a parsed LiteLLM config. Never raises for content: problems go to ``unmapped``."""
    unmapped: list[str] = []
    defaults: list[str] = []
    settings_version = (doc.get("litellm_settings") or {}).get("api_version")
    providers: dict[str, Provider] = {}
    secrets: dict[str, SecretPlaceholder] = {}
    deployments: dict[str, list[Deployment]] = {}
    provider_ids: dict[tuple[str, str, str, str], str] = {}
    for i, entry in enumerate(doc.get("model_list") or []):
        where = f"model_list[{i}]"
        alias = str(entry.get("model_name") or "")
        params = dict(entry.get("litellm_params") or {})
        found = _kind_and_model(str(params.get("model") or ""))
        if not alias or found is None:
            unmapped.append(f"{where}: provider of model `{params.get('model')}` is not supported")
            continue
        kind, model = found
        api_base = params.get("api_base") or params.get("base_url")
        if kind == "openai" and api_base:
            kind = "openai-compatible"
        key_source = str(params.get("api_key") or "")
        api_version = params.get("api_version") or (settings_version if kind == "azure" else None)
        if kind == "azure" and not api_version:
            api_version = LITELLM_AZURE_DEFAULT_API_VERSION
            defaults.append(
                f"{where} ({alias}): no api_version; using {api_version}, LiteLLM's default "
                "(LiteLLM would prefer $AZURE_API_VERSION if its environment set one; set "
                "api_version on the provider to pin another)"
            )
        signature = (kind, str(api_base or ""), key_source, str(api_version or ""))
        name = provider_ids.get(signature)
        if name is None:
            base = (
                kind
                if not api_base
                else f"{kind}-{_slug(urlsplit(str(api_base)).hostname or 'local')}"
            )
            name = base if base not in providers else f"{base}-{len(providers) + 1}"
            provider_ids[signature] = name
            secret = _secret_for(params.get("api_key"), name)
            if secret is not None:
                secrets[secret.name] = secret
            providers[name] = Provider(
                kind=cast(ProviderKind, kind),
                api_base=str(api_base) if api_base else None,
                api_version=str(api_version) if api_version else None,
                secret=secret.name if secret else None,
            )
        timeouts = None
        if params.get("timeout") or params.get("stream_timeout"):
            total = float(params.get("timeout") or 600)
            timeouts = Timeouts(
                first_token_s=min(total, 60.0),
                request_s=total,
                stream_s=float(params.get("stream_timeout") or total),
            )
        concurrency = params.get("max_parallel_requests")
        deployments.setdefault(alias, []).append(
            Deployment(
                provider=name,
                model=model,
                weight=float(params.get("weight") or 1),
                concurrency=int(concurrency) if concurrency else None,
                timeouts=timeouts,
            )
        )
        for limit in ("rpm", "tpm"):
            if params.get(limit):
                unmapped.append(
                    f"{where}.litellm_params.{limit}: per-deployment {limit.upper()} is not a "
                    "Switchyard setting; use client-key limits or the deployment's concurrency"
                )
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


def _fallbacks(doc: dict[str, Any], unmapped: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for section in ("router_settings", "litellm_settings"):
        for item in (doc.get(section) or {}).get("fallbacks") or []:
            if not isinstance(item, dict):
                unmapped.append(f"{section}.fallbacks: entry `{item}` is not a mapping")
                continue
            for alias, targets in item.items():
                found.setdefault(str(alias), []).extend(str(t) for t in targets or [])
        for kind in ("context_window_fallbacks", "content_policy_fallbacks"):
            if (doc.get(section) or {}).get(kind):
                unmapped.append(f"{section}.{kind}: not supported (only error fallbacks are)")
    return found


def _note_unsupported(doc: dict[str, Any], unmapped: list[str]) -> None:
    router = doc.get("router_settings") or {}
    strategy = router.get("routing_strategy")
    if strategy and strategy != "simple-shuffle":
        unmapped.append(
            f"router_settings.routing_strategy `{strategy}`: Switchyard uses weighted choice "
            "among healthy deployments"
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

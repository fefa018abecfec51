"""Providers, deployments and routes: the documents that say where a model alias goes.

The same types serve the config file (seed) and the live route table in NATS KV, so a route that
validates in one place validates in the other. A *provider* is a connection (kind, base URL, secret
name, default limits); a *deployment* is one upstream model on one provider, with its own work queue
(``llm.v1.dispatch.<deployment id>``) and concurrency; a *route* maps a client-facing alias to
weighted deployments plus fallback aliases.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from typing import Annotated, Literal, NamedTuple
from urllib.parse import parse_qsl, urlsplit

import msgspec

from switchyard.schemas.numbers import NonNegative
from switchyard.schemas.secrets import NAME_PATTERN, unstorable
from switchyard.schemas.table_names import Name, name_problem
from switchyard.schemas.timeouts import Timeouts, call_timeouts, settings_apart

# Kinds served by the direct OpenAI-compatible path (one aiohttp POST, no litellm).
OPENAI_COMPATIBLE_KINDS = frozenset(
    {"openai", "azure", "openai-compatible", "vllm", "ollama", "groq", "together"}
)
# Kinds served through litellm (its own wire formats).
LITELLM_KINDS = frozenset({"anthropic", "gemini", "cohere", "mistral", "bedrock", "litellm"})
ProviderKind = Literal[
    "demo",
    "openai",
    "azure",
    "openai-compatible",
    "vllm",
    "ollama",
    "groq",
    "together",
    "anthropic",
    "gemini",
    "cohere",
    "mistral",
    "bedrock",
    "litellm",
]

DEFAULT_API_BASES: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "groq": "https://api.groq.com/openai/v1",
    "together": "https://api.together.xyz/v1",
    "ollama": "http://127.0.0.1:11434/v1",
}
# Kinds whose base URL has no sensible default.
KINDS_NEEDING_API_BASE = frozenset({"azure", "openai-compatible", "vllm"})

# Bounds on free text in the table, in characters: newest rules of route_table_findings, so a
# table stored before them still loads (the types would refuse it on every read).
MAX_DESCRIPTION_CHARS = 1024
MAX_API_BASE_CHARS = 2048
MAX_API_VERSION_CHARS = 64
# A deployment's weight, by the same newest-rule scheme: weights are summed to pick one, and a
# sum that overflows to infinity picks none (every request of the route failed).
MAX_WEIGHT = 1_000_000
# In-flight requests per deployment across every model-proxy. Far above any provider's real
# limit; a larger number (10,000,000,000 was accepted) is a typo or a wish for "no limit",
# which the dispatch consumer would silently become.
MAX_CONCURRENCY = 100_000
Positive = Annotated[int, msgspec.Meta(ge=1)]
_SECRET_NAME = re.compile(NAME_PATTERN)


class Provider(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One upstream API endpoint and how to authenticate to it.

    Attributes:
        kind: the API dialect (``openai``, ``azure``, ``anthropic``, ``demo``...).
        api_base: base URL; defaults per kind where one exists.
        api_version: Azure OpenAI ``api-version`` query parameter.
        secret: the name of the API key in the secrets service; never the key itself.
        concurrency: default in-flight requests per deployment on this provider, across all
            model-proxy replicas (the dispatch consumer's ``max_ack_pending``).
        timeouts: call timeouts for its deployments, each field one of theirs does not set
            (see :mod:`switchyard.schemas.timeouts`).
    """

    kind: ProviderKind
    api_base: str | None = None
    api_version: str | None = None
    secret: Name | None = None
    concurrency: Positive = 64
    timeouts: Timeouts = Timeouts()

    @property
    def base_url(self) -> str | None:
        return self.api_base or DEFAULT_API_BASES.get(self.kind)


class Price(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """Per-token prices in USD, overriding litellm's bundled price map.

    ``cache_read_per_token`` and ``cache_write_per_token`` price the prompt tokens the provider
    read from and wrote to its prompt cache (counted in the prompt, billed apart); each is the
    input price when not set. ``web_search_per_call`` prices each web search the provider's
    own tool made; when not set, litellm's map prices it, else $0.01 a search. Every price is
    a finite number, zero or more.
    """

    # Not NonNegative: its bound would answer an infinity in msgspec's words before
    # ``__post_init__`` names the field in the route table's.
    input_per_token: Annotated[float, msgspec.Meta(ge=0)]
    output_per_token: Annotated[float, msgspec.Meta(ge=0)]
    cache_read_per_token: Annotated[float, msgspec.Meta(ge=0)] | None = None
    cache_write_per_token: Annotated[float, msgspec.Meta(ge=0)] | None = None
    web_search_per_call: Annotated[float, msgspec.Meta(ge=0)] | None = None

    def __post_init__(self) -> None:
        # A YAML ``.inf`` passes ``ge=0`` (JSON cannot carry one): it would bill infinities.
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number")

    @property
    def cache_read(self) -> float:
        """USD per prompt token read from the provider's cache."""
        r = self.cache_read_per_token
        return self.input_per_token if r is None else r

    @property
    def cache_write(self) -> float:
        """USD per prompt token written to the provider's cache."""
        w = self.cache_write_per_token
        return self.input_per_token if w is None else w


class Deployment(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One upstream model on one provider, as a target of a route.

    Attributes:
        provider: a key of ``providers``.
        model: the provider's model name (sent upstream in place of the client's alias).
        weight: relative share of traffic among this route's healthy deployments.
        concurrency: overrides the provider's default.
        timeouts: override the provider's, field by field (a field not set here is the
            provider's).
        price: overrides litellm's price for this model.
    """

    provider: Name
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    weight: NonNegative = 1.0
    concurrency: Positive | None = None
    timeouts: Timeouts | None = None
    price: Price | None = None

    @property
    def id(self) -> str:
        """Stable identifier: names the dispatch subject token and the durable consumer."""
        return deployment_id(self.provider, self.model)


class Route(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A client-facing model alias.

    Attributes:
        deployments: where requests go, chosen by weight among healthy ones.
        fallbacks: other aliases tried, in order, when every deployment failed.
    """

    deployments: Annotated[tuple[Deployment, ...], msgspec.Meta(min_length=1)]
    fallbacks: tuple[Name, ...] = ()
    description: str = ""


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# Every id :func:`deployment_id` makes matches this: a sanitised one is 89 characters at most,
# an unchanged one up to 386 (a 128-character provider, "--", a 256-character model).
_DEPLOYMENT_ID = re.compile(r"[A-Za-z0-9_-]{1,512}")


def is_deployment_id(value: str) -> bool:
    """True when ``value`` could be a deployment's id (one NATS token: no dots, wildcards)."""
    return _DEPLOYMENT_ID.fullmatch(value) is not None


@functools.lru_cache(maxsize=4096)
def deployment_id(provider: str, model: str) -> str:
    """A NATS-token-safe id for (provider, model).

    Subject tokens and consumer names cannot hold ``.``, ``*``, ``>``, ``/`` or whitespace; where
    sanitising changes the name, a short hash keeps distinct models distinct.
    """
    raw = f"{provider}--{model}"
    safe = _UNSAFE.sub("_", raw)
    if safe != raw:
        safe = f"{safe[:80]}-{hashlib.sha256(raw.encode()).hexdigest()[:8]}"
    return safe


_KEY_PREFIXES = ("sk-", "sk_", "key-", "AIza", "gsk_", "xai-", "pk-", "Bearer ")


def looks_like_a_key(value: str) -> bool:
    """Heuristic: provider keys have well-known prefixes or are long random strings."""
    if value.startswith(_KEY_PREFIXES):
        return True
    return len(value) >= 32 and sum(c.isdigit() for c in value) >= 4 and "-" not in value[:8]


class SecretUsers(NamedTuple):
    """Who depends on one stored secret (what deleting it would hit)."""

    providers: list[str]  # providers whose ``secret`` it is
    routes: list[str]  # routes with a deployment on one of them
    stranded: list[str]  # of those, the ones left with nothing to answer (503) without it
    # Of those, the ones left with none of their own deployments: only their fallbacks
    # (route -> fallbacks, in order) will answer, and their own model is not served.
    fallback_only: dict[str, list[str]]

    @property
    def degraded(self) -> list[str]:
        """Routes that lose those deployments but keep some of their own answering."""
        return [a for a in self.routes if a not in self.stranded and a not in self.fallback_only]

    def fallback_notes(self) -> list[str]:
        """Each route of :attr:`fallback_only`, with what will answer for it (a route left
        with its fallbacks alone is not "degraded": its own model is no longer served)."""
        return [
            f"{alias} (only its fallback{'s' if len(f) > 1 else ''} {', '.join(f)} will answer)"
            for alias, f in self.fallback_only.items()
        ]


class RouteTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole routing state, stored as one document so a change applies atomically."""

    providers: dict[Name, Provider] = {}
    routes: dict[Name, Route] = {}

    def secret_users(self, name: str) -> SecretUsers:
        """The providers whose secret is ``name``, the routes using them, the routes
        stranded without it (every deployment on those providers, and no fallback), and the
        routes only their fallbacks will answer for (every deployment, but a fallback)."""
        providers = sorted(p for p, spec in self.providers.items() if spec.secret == name)
        routes = sorted(
            a for a, r in self.routes.items() if any(d.provider in providers for d in r.deployments)
        )
        lost = set(providers)
        emptied = [a for a in routes if all(d.provider in lost for d in self.routes[a].deployments)]
        # A fallback counts only if something still answers for it: its own deployments, or
        # its fallbacks in turn (a fallback on the same key is no fallback).
        surviving = {
            a: [f for f in self.routes[a].fallbacks if self._answers(f, lost)] for a in emptied
        }
        stranded = [a for a in emptied if not surviving[a]]
        fallback_only = {a: f for a, f in surviving.items() if f}
        return SecretUsers(providers, routes, stranded, fallback_only)

    def _answers(self, alias: str, lost: set[str], seen: frozenset[str] = frozenset()) -> bool:
        """Whether a request for ``alias`` still finds a deployment off the ``lost``
        providers, on the route or through its fallbacks (each alias once)."""
        route = self.routes.get(alias)
        if route is None or alias in seen:
            return False
        if any(d.provider not in lost for d in route.deployments):
            return True
        return any(self._answers(f, lost, seen | {alias}) for f in route.fallbacks)

    def unstored_secrets(self, stored: set[str]) -> list[tuple[str, str]]:
        """(secret, provider) for each provider naming a secret that is not stored."""
        return sorted(
            (spec.secret, p)
            for p, spec in self.providers.items()
            if spec.secret and spec.secret not in stored
        )

    def deployments(self) -> dict[str, tuple[Provider, Deployment]]:
        """Every distinct deployment by id, with its provider.

        Routes sharing a deployment share its queue, so its settings are one: the first route's
        (:func:`route_table_problems` refuses routes that disagree), with the price whichever
        route sets one (a route may leave it out, another naming the deployment may set it).
        """
        found: dict[str, tuple[Provider, Deployment]] = {}
        for route in self.routes.values():
            for dep in route.deployments:
                known = found.get(dep.id)
                if known is None:
                    found[dep.id] = (self.providers[dep.provider], dep)
                elif known[1].price is None and dep.price is not None:
                    found[dep.id] = (known[0], msgspec.structs.replace(known[1], price=dep.price))
        return found


_KEY_PARAMS = frozenset({"key", "api_key", "api-key", "apikey", "token", "access_token"})


def credential_in_url(url: str) -> bool:
    """Whether ``url`` holds a secret: a password, or a key-like query parameter (the route
    table is not secret; keys belong in the secrets service)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return False
    query = parse_qsl(parts.query, keep_blank_values=False)
    # By name, or by a vendor's key prefix (not by shape: ids such as UUIDs look like keys).
    return bool(password) or any(
        name.lower() in _KEY_PARAMS or value.startswith(_KEY_PREFIXES) for name, value in query
    )


def http_url(url: str) -> bool:
    """Whether ``url`` is an absolute http(s) URL with a host (what a provider call needs:
    a typo such as ``htps://`` or a bare host name otherwise fails only at the first call)."""
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # a bad port or bracketed host
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and port_ok


class RouteProblem(msgspec.Struct, frozen=True):
    """One reason a route table is invalid: where, what, and how to fix it."""

    field: str
    problem: str
    hint: str


class RouteFindings(NamedTuple):
    """What one pass of the checks found: ``problems`` refuse the table; ``kept`` are what the
    newest rules say of providers and routes held only to older ones (see
    :func:`route_table_findings`), worth a warning but no refusal."""

    problems: list[RouteProblem]
    kept: list[RouteProblem]


def route_table_problems(
    table: RouteTable, *, stored: bool = False, previous: RouteTable | None = None
) -> list[RouteProblem]:
    """The problems that make ``table`` invalid: :func:`route_table_findings`' ``problems``."""
    return route_table_findings(table, stored=stored, previous=previous).problems


def route_table_findings(
    table: RouteTable, *, stored: bool = False, previous: RouteTable | None = None
) -> RouteFindings:
    """Cross-reference checks the types alone cannot express.

    Returns every problem found (none when the table is valid), so an operator fixes them all
    in one go instead of one per restart. ``stored``: a table already in the bucket, which may
    predate a newer rule (two prices for one deployment were taken, first route first; an
    ``api_base`` that is no http(s) URL): it is held only to the rules it was written under, so
    it still loads and can be replaced. ``previous``: the stored table an edit replaces; a
    provider or route the edit leaves exactly as it was is held to those same rules, so an
    edit elsewhere is not refused for what it did not touch, and one that changes it must
    bring it up to date. What the newer rules say of such an entry comes back as ``kept``
    (with neither argument nothing is excused, so ``kept`` is empty): an edit learns both
    from one pass.
    """
    problems: list[RouteProblem] = []
    kept: list[RouteProblem] = []  # newest-rule problems of entries held to older rules
    for name, provider in table.providers.items():
        newest = not stored and (previous is None or previous.providers.get(name) != provider)
        if provider.secret and looks_like_a_key(provider.secret):
            problems.append(
                RouteProblem(
                    f"providers.{name}.secret",
                    "this looks like an API key, not the name of a stored secret",
                    f"store the key with `switchyard secrets put {name}` and set `secret: {name}`",
                )
            )
        (problems if newest else kept).extend(_newer_provider_rules(name, provider))
        if provider.kind in KINDS_NEEDING_API_BASE and not provider.api_base:
            problems.append(
                RouteProblem(
                    f"providers.{name}.api_base",
                    f"kind `{provider.kind}` has no default base URL",
                    "set api_base to the server's OpenAI-compatible URL, e.g. http://host:8000/v1",
                )
            )
        if provider.kind == "azure" and not provider.api_version:
            problems.append(
                RouteProblem(
                    f"providers.{name}.api_version",
                    "Azure OpenAI needs an api-version",
                    "set api_version, e.g. 2024-10-21",
                )
            )
    seen: dict[str, tuple[str, Deployment]] = {}
    touched_at: dict[str, bool] = {}  # whether the route that first named an id is new or changed
    priced_by: dict[str, tuple[str, Deployment, bool]] = {}  # where, what, touched
    for alias, route in table.routes.items():
        touched = not stored and (previous is None or previous.routes.get(alias) != route)
        if bad := name_problem("routes", alias):  # "a\n": the type's "$" takes it
            (problems if touched else kept).append(RouteProblem(*bad))
        if len(route.description) > MAX_DESCRIPTION_CHARS:
            (problems if touched else kept).append(
                RouteProblem(
                    f"routes.{alias}.description",
                    f"{len(route.description):,} characters long; at most "
                    f"{MAX_DESCRIPTION_CHARS} are allowed",
                    "shorten the description",
                )
            )
        for i, dep in enumerate(route.deployments):
            where = f"routes.{alias}.deployments[{i}]"
            if (dep.concurrency or 0) > MAX_CONCURRENCY:
                (problems if touched else kept).append(_too_concurrent(where, dep.concurrency or 0))
            if dep.weight > MAX_WEIGHT:
                (problems if touched else kept).append(
                    RouteProblem(
                        f"{where}.weight",
                        f"weight {dep.weight:g} is above the largest, {MAX_WEIGHT:,}",
                        "weights are relative shares: give a number from 0 to "
                        f"{MAX_WEIGHT:,}, e.g. 1 or 0.5",
                    )
                )
            if dep.provider not in table.providers:
                known = ", ".join(sorted(table.providers)) or "none"
                problems.append(
                    RouteProblem(
                        f"{where}.provider",
                        f"unknown provider `{dep.provider}`",
                        f"define it under `providers:` or use one of: {known}",
                    )
                )
                continue
            earlier = seen.get(dep.id)
            if earlier and (earlier[1].provider, earlier[1].model) != (dep.provider, dep.model):
                # ``provider--model`` read two ways: one queue, one provider's key for both.
                # Refused when either side is new or changed (an edit elsewhere, such as
                # adding the provider a rename needs, is not refused for an old clash).
                (problems if touched or touched_at[dep.id] else kept).append(
                    RouteProblem(
                        f"{where}",
                        f"deployment {dep.provider}/{dep.model} and {earlier[1].provider}/"
                        f"{earlier[1].model} ({earlier[0]}) get the same queue `{dep.id}`: "
                        "both would be served by one provider",
                        "a provider name with `--` in it (or ending with `-`) makes queue ids "
                        "ambiguous: rename that provider",
                    )
                )
                continue
            priced = priced_by.get(dep.id)
            # Two routes pricing one deployment apart: refused when either is new or changed.
            if priced is not None and dep.price is not None and priced[1].price != dep.price:
                (problems if touched or priced[2] else kept).append(
                    RouteProblem(
                        f"{where}.price",
                        f"deployment {dep.provider}/{dep.model} is priced differently by "
                        f"{priced[0]}; it is one deployment, billed at one price",
                        "give both the same price, or set it on one of them only",
                    )
                )
            if dep.price is not None:
                priced_by.setdefault(dep.id, (where, dep, touched))
            provider_timeouts = table.providers[dep.provider].timeouts
            if earlier and (
                earlier[1].concurrency,
                call_timeouts(earlier[1].timeouts, provider_timeouts),
            ) != (dep.concurrency, call_timeouts(dep.timeouts, provider_timeouts)):
                apart = settings_apart(  # which fields, and where each value comes from
                    (dep.concurrency, dep.timeouts),
                    (earlier[1].concurrency, earlier[1].timeouts),
                    provider_timeouts,
                    dep.provider,
                )
                problems.append(
                    RouteProblem(
                        f"{where}",
                        f"deployment {dep.provider}/{dep.model} is also used by {earlier[0]} "
                        f"(there) with different settings: {apart}; it has one "
                        "queue, so one setting",
                        "write the same value on both (or on neither, to use the provider's)",
                    )
                )
            seen.setdefault(dep.id, (where, dep))
            touched_at.setdefault(dep.id, touched)
        if not any(d.weight > 0 for d in route.deployments):
            problems.append(
                RouteProblem(
                    f"routes.{alias}.deployments",
                    "every deployment has weight 0, so nothing would be chosen",
                    "give at least one deployment a positive weight",
                )
            )
        for j, fallback in enumerate(route.fallbacks):
            if fallback not in table.routes:
                problems.append(
                    RouteProblem(
                        f"routes.{alias}.fallbacks[{j}]",
                        f"unknown alias `{fallback}`",
                        "fallbacks name other routes; define it under `routes:` or remove it",
                    )
                )
            elif fallback == alias:
                problems.append(
                    RouteProblem(
                        f"routes.{alias}.fallbacks[{j}]",
                        "a route cannot fall back to itself",
                        "remove it; retries across its own deployments happen anyway",
                    )
                )
    return RouteFindings(problems, kept)


def _newer_provider_rules(name: str, provider: Provider) -> list[RouteProblem]:
    """The provider rules a stored table may predate (see :func:`route_table_findings`)."""
    found = _long_provider_text(name, provider)
    if bad := name_problem("providers", name):  # "a\n": the type's "$" takes it
        found.insert(0, RouteProblem(*bad))
    if provider.secret and not _SECRET_NAME.fullmatch(provider.secret):  # unstorable: 503s
        found.append(RouteProblem(f"providers.{name}.secret", *unstorable(provider.secret)))
    if provider.concurrency > MAX_CONCURRENCY:
        found.append(_too_concurrent(f"providers.{name}", provider.concurrency))
    # A URL past its bound is said by _long_provider_text: the URL checks would quote all of it.
    base = provider.api_base if len(provider.api_base or "") <= MAX_API_BASE_CHARS else None
    if base and not http_url(base):
        found.append(
            RouteProblem(
                f"providers.{name}.api_base",
                f"`{base}` is not an http:// or https:// URL with a host",
                "give the provider's base URL, e.g. https://api.example.com/v1",
            )
        )
    elif base and credential_in_url(base):
        found.append(
            RouteProblem(
                f"providers.{name}.api_base",
                "the URL carries a credential (a key in its query or a password)",
                f"store the key with `switchyard secrets put {name}`, set `secret: {name}`, "
                "and give the URL without it",
            )
        )
    return found


def _long_provider_text(name: str, provider: Provider) -> list[RouteProblem]:
    """``api_base`` and ``api_version`` past their bounds (free text the admin API stores)."""
    found = []
    for field, value, bound in (
        ("api_base", provider.api_base, MAX_API_BASE_CHARS),
        ("api_version", provider.api_version, MAX_API_VERSION_CHARS),
    ):
        if value and len(value) > bound:
            found.append(
                RouteProblem(
                    f"providers.{name}.{field}",
                    f"{len(value):,} characters long; at most {bound} are allowed",
                    f"shorten {field}",
                )
            )
    return found


class InvalidRouteTable(ValueError):
    """A route table document that must not be applied; ``problems`` says why."""

    def __init__(self, problems: list[RouteProblem]) -> None:
        self.problems = problems
        first = problems[0]
        super().__init__(f"{first.field}: {first.problem} (fix: {first.hint})")


_TABLE_DECODER = msgspec.json.Decoder(RouteTable)


def decode_route_table(data: bytes) -> RouteTable:
    """Decode and check a stored route table; all or nothing.

    Raises:
        InvalidRouteTable: not valid JSON for the schema, or failing a cross-reference check.
    """
    try:
        table = _TABLE_DECODER.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
        raise InvalidRouteTable(
            [RouteProblem("(document)", str(exc), "send a valid route table")]
        ) from None
    problems = route_table_problems(table, stored=True)
    if problems:
        raise InvalidRouteTable(problems)
    return table


def _too_concurrent(where: str, concurrency: int) -> RouteProblem:
    return RouteProblem(
        f"{where}.concurrency",
        f"concurrency {concurrency:,} is above the largest, {MAX_CONCURRENCY:,}",
        "give the number of requests the provider may run at once for this deployment "
        f"(1 to {MAX_CONCURRENCY:,})",
    )

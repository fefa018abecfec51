"""What a route table write changed about where provider keys go, in words for the audit log.

A provider's ``api_base`` says where the model-proxies send its key, ``secret`` which stored
key that is, and ``kind`` the default URL and the wire format. An admin credential can change
all three, so the audit entry of any table write (one provider, the whole table, ``routes
sync``, an import) names each change, old -> new: secret *names* and URLs, never a key.
The URL shown is the one the key goes to: ``api_base``, else the kind's default URL (marked
``(default)``), so a change of kind alone (``openai`` -> ``together``) names the new host
too. A URL is shown without user info or query (either may carry a credential the table
check refuses only on new writes): a change there alone is said as such. The words are
bounded in length.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from switchyard.bus.control_admin import ControlClient
from switchyard.schemas.control import TableState
from switchyard.schemas.routing import Provider, RouteTable, SecretUsers

MAX_CHARS = 1000  # the whole phrase; an audit entry stays small (see switchyard.admin.audit)
_URL_CHARS = 120
_FIELDS = ("kind", "api_base", "secret")


def shown_url(url: str | None) -> str:
    """``url`` as an audit entry shows it: scheme, host, port and path only, bounded."""
    if not url:
        return "none"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(not a URL)"
    shown = f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else "(not a URL)"
    return shown if len(shown) <= _URL_CHARS else shown[: _URL_CHARS - 1] + "…"


def _where(provider: Provider) -> str:
    """Where ``provider``'s key goes, as shown: its api_base, else its kind's default URL."""
    if provider.api_base or not provider.base_url:
        return shown_url(provider.api_base)
    return f"{shown_url(provider.base_url)} (default)"


def _value(provider: Provider, field: str) -> str:
    if field == "api_base":
        return _where(provider)
    return str(getattr(provider, field) or "none")


def _moved(old: Provider, new: Provider) -> str | None:
    """``api_base old -> new`` when the kind, the api_base or the URL it stands for changed;
    when the shown URLs are the same, what hidden part of it changed."""
    if old.kind == new.kind and old.api_base == new.api_base:
        return None
    said = f"api_base {_where(old)} -> {_where(new)}"
    if shown_url(old.base_url) != shown_url(new.base_url) or old.base_url == new.base_url:
        return said
    return f"{said} ({_hidden_change(old.base_url or '', new.base_url or '')})"


def _hidden_change(before: str, after: str) -> str:
    try:
        a, b = urlsplit(before), urlsplit(after)
        secret = (a.username, a.password, a.query) != (b.username, b.password, b.query)
    except ValueError:
        secret = True
    return "credentials or query changed" if secret else "written differently"


def provider_changes(before: RouteTable, after: RouteTable) -> list[str]:
    """One phrase per provider added, removed, or whose kind, api_base or secret changed,
    sorted by name (``provider x: api_base http://a/v1 -> http://b/v1``); a change of kind
    also says the URL, old -> new, even when it stayed the same."""
    phrases = []
    for name in sorted(before.providers.keys() | after.providers.keys()):
        old, new = before.providers.get(name), after.providers.get(name)
        if new is None:
            phrases.append(f"provider {name} removed")
        elif old is None:
            said = ", ".join(f"{f} {_value(new, f)}" for f in _FIELDS)
            phrases.append(f"provider {name} added: {said}")
        else:
            moved = [f"kind {old.kind} -> {new.kind}"] if old.kind != new.kind else []
            moved += [url for url in [_moved(old, new)] if url]
            if old.secret != new.secret:
                moved.append(f"secret {_value(old, 'secret')} -> {_value(new, 'secret')}")
            if moved:
                phrases.append(f"provider {name}: {', '.join(moved)}")
    return phrases


def bounded(phrases: list[str], limit: int = MAX_CHARS, sep: str = "; ") -> str:
    """``phrases`` joined with ``sep``, at most ``limit`` characters: those that do not fit
    are counted (``; and 3 more``)."""
    room = limit - 20  # for the count
    said: list[str] = []
    for i, phrase in enumerate(phrases):
        joined = sep.join([*said, phrase])
        if len(joined) <= room or (i == len(phrases) - 1 and len(joined) <= limit):
            said.append(phrase)
            continue
        if not said:  # one long phrase: its start
            said.append(phrase[: room - 1] + "…")
            i += 1  # noqa: PLW2901 (counted as said)
        rest = len(phrases) - i
        return sep.join(said) + (f"{sep}and {rest} more" if rest else "")
    return sep.join(said)


def table_words(before: RouteTable, after: RouteTable, revision: int) -> str:
    """An audit detail for a table write: the provider changes, then the revision."""
    said = bounded(provider_changes(before, after), MAX_CHARS - 20)
    return f"{said}; revision {revision}" if said else f"revision {revision}"


async def edit_seen(
    control: ControlClient, change: Callable[[RouteTable], RouteTable]
) -> tuple[TableState, RouteTable]:
    """:meth:`ControlClient.edit`, also returning the table the written one replaced (the
    last one ``change`` saw: compare-and-set wrote over exactly that one)."""
    seen: list[RouteTable] = []

    def watched(table: RouteTable) -> RouteTable:
        seen.append(table)
        return change(table)

    state = await control.edit(watched)
    return state, seen[-1] if seen else state.table


def secret_delete_words(users: SecretUsers | None, how: str = "") -> str:
    """An audit detail for a deleted secret: ``how`` it was deleted anyway (``forced
    (?force=true)``), the providers it was the key of and the routes that left without an
    answer or to their fallbacks; ``users`` None: who used it could not be read."""
    phrases = [how] if how else []
    if users is None:
        phrases.append("whether a provider used it could not be read")
    elif users.providers:
        phrases.append(f"it was the key of providers {', '.join(users.providers)}")
        if users.stranded:
            phrases.append(f"routes left with nothing to answer: {', '.join(users.stranded)}")
        if users.fallback_only:
            phrases.append(f"routes only their fallbacks answer: {', '.join(users.fallback_only)}")
    elif how:
        phrases.append("no provider used it")
    return bounded(phrases)

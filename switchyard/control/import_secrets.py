"""The secrets ``switchyard import litellm-config --apply`` stores, and which live providers
writing them would touch.

Secret names are shared: a literal key is stored as ``<provider>-key`` and ``os.environ/NAME``
under a name made from the variable, and a live provider outside the import may already use a
secret of that name. Storing a new version then silently swaps that provider's key (its calls
start failing with 401s). So before anything is written the import lists, from metadata only
(no value is ever read back), which of its secrets are already stored and which live
providers use each; ``--apply`` refuses when one is used outside the import, unless
``--replace`` says to store the new versions anyway.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import TextIO

from nats.aio.client import Client as NATS

from switchyard.bus.audit import AuditWriter
from switchyard.bus.secrets_admin import SecretsAdmin
from switchyard.config import read_env_secret
from switchyard.control.litellm_import import ImportResult, SecretPlaceholder
from switchyard.schemas.routing import RouteTable
from switchyard.schemas.secrets import COOLDOWNS_RUN_ON, written_words


def value_to_store(secret: SecretPlaceholder, *, from_env: bool) -> str | None:
    """The value ``--apply`` stores for ``secret``: the literal key from the file, or with
    ``--secrets-from-env`` the variable's value; None when there is nothing to store."""
    # No key starts or ends with a blank (the secrets service refuses one that does): a CI or
    # Kubernetes secret often ends in a newline, a pasted key in a space; dropped, as
    # `secrets put` drops them (a literal key in the file is stripped when read).
    if secret.value:
        return secret.value
    if from_env and secret.env_var:
        return (read_env_secret(secret.env_var) or "").strip() or None
    return None


@dataclass(frozen=True, slots=True)
class StoredSecret:
    """A secret the import would store that is stored already. ``users`` are the live
    providers outside the import that use it; any user makes storing it a clash."""

    name: str
    version: int
    users: tuple[str, ...]


def overwrites(
    live: RouteTable, incoming: RouteTable, names: Iterable[str], stored: dict[str, int]
) -> list[StoredSecret]:
    """Which of ``names`` (the secrets the import would store) are in ``stored`` (name to
    current version), each with the live providers that would see the new version.

    A live provider the import brings in again with the same secret is not counted: it is
    meant to use the imported key.
    """
    found = []
    for name in sorted(set(names)):
        if name not in stored:
            continue
        users = tuple(
            provider
            for provider in live.secret_users(name).providers
            if not (provider in incoming.providers and incoming.providers[provider].secret == name)
        )
        found.append(StoredSecret(name, stored[name], users))
    return found


def in_use(found: list[StoredSecret]) -> list[StoredSecret]:
    """The stored secrets that live providers outside the import use: the clashes."""
    return [s for s in found if s.users]


def secrets_report(found: list[StoredSecret], out: TextIO) -> None:
    """Say, per secret the import would store over a stored one, what a new version touches."""
    if not found:
        return
    print("secrets the import would store that are already stored:", file=out)
    for secret in found:
        if secret.users:
            how = (
                f"used by live providers outside this import ({', '.join(secret.users)}); "
                "a new version would change their key"
            )
        else:
            how = (
                f"a new version of {secret.name} will be stored (version {secret.version} now) "
                "unless it holds that key already"
            )
        print(f"  secret {secret.name}: {how}", file=out)


def secret_refusal(found: list[StoredSecret]) -> tuple[str, str]:
    """The problem and the fix when ``--apply`` would store a secret other providers use."""
    named = "; ".join(f"secret {s.name} (used by {', '.join(s.users)})" for s in found)
    problem = (
        f"not applied: {len(found)} secrets the import would store are already used by live "
        f"providers it does not bring in ({named}); a new version would change their key"
    )
    fix = (
        "add --replace to store the new versions anyway, or give the key another name in the "
        "LiteLLM config (os.environ/OTHER_NAME)"
    )
    return problem, fix


async def stored_versions(secrets_admin: SecretsAdmin) -> dict[str, int]:
    """Every stored secret's current version, from metadata only."""
    return {info.name: info.version for info in await secrets_admin.list()}


@dataclass(frozen=True, slots=True)
class MissingKey:
    """A key the import refers to that is not stored: the imported ``providers`` using it
    answer 503 ``secret_unavailable`` until it is."""

    name: str
    env_var: str
    why: str  # why it was not stored, after the variable's name
    providers: tuple[str, ...]


async def store_secrets(
    result: ImportResult,
    nc: NATS,
    actor: str,
    out: TextIO,
    *,
    from_env: bool,
    stored: Collection[str] = (),
) -> list[MissingKey]:
    """Store each key the import carries (see :func:`value_to_store`), audited, never
    printed; returns the ``os.environ`` keys neither stored now nor before (``stored``)."""
    secrets_admin = SecretsAdmin(nc, actor=actor)
    audit = AuditWriter(nc, "cli")
    who = actor.removeprefix("import:")
    missing = []
    for secret in result.secrets:
        value = value_to_store(secret, from_env=from_env)
        if value:
            info = await secrets_admin.put(secret.name, value)
            await audit.record(who, "secret.put", info.name, written_words(info))
            if info.changed:
                print(f"stored secret {secret.name}", file=out)
            else:  # no new version: its deployments' cooldowns run on
                print(
                    f"secret {secret.name} unchanged: it holds that key already; "
                    + COOLDOWNS_RUN_ON,
                    file=out,
                )
        elif secret.env_var and secret.name not in stored:
            why = "is not set in this shell" if from_env else "not read: no --secrets-from-env"
            users = sorted(n for n, p in result.table.providers.items() if p.secret == secret.name)
            missing.append(MissingKey(secret.name, secret.env_var, why, tuple(users)))
    return missing


def missing_keys_report(missing: list[MissingKey], table: RouteTable, err: TextIO) -> None:
    """The warning after an apply that left keys unstored: which providers (and routes)
    answer 503 until each is stored, and the command that stores it."""
    if not missing:
        return
    count = sum(len(m.providers) for m in missing)
    print(
        f"warning: {count} imported {'provider answers' if count == 1 else 'providers answer'}"
        " 503 secret_unavailable until their key is stored:",
        file=err,
    )
    for key in missing:
        routes = sorted(
            alias
            for alias, route in table.routes.items()
            if any(d.provider in key.providers for d in route.deployments)
        )
        print(
            f"  {', '.join(key.providers) or 'no provider'} (routes {', '.join(routes) or 'none'})"
            f": secret {key.name} not stored (${key.env_var} {key.why})",
            file=err,
        )
    print(
        "store each key (read from stdin, never from the command line), then those routes serve:",
        file=err,
    )
    for key in missing:
        print(f"  printenv {key.env_var} | switchyard secrets put {key.name}", file=err)
    print(
        "or set the variables and run the import again with --secrets-from-env",
        file=err,
    )

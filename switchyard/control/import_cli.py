"""``switchyard import litellm-config FILE``: migrate a LiteLLM proxy config.

Prints what was mapped, the secrets to store and what could not be mapped. ``--output`` writes
the providers and routes as YAML for ``switchyard.yaml``; ``--apply`` merges them into the live
route table (through the control service, compare-and-set) and stores literal keys found in the
file in the secrets service, so the new routes serve at once. Key values are never printed.

The live table is already serving, so a provider or route of the same name that differs is not
overwritten silently: ``--apply`` names each one and how it differs, then refuses (nothing
stored, nothing changed) unless ``--replace`` says to replace them; an identical entry is no
clash. The same holds for a secret the import would store whose name a live provider outside
the import already uses (:mod:`switchyard.control.import_secrets`). The dry run (no
``--apply``) shows the same when it can reach the platform, and says so when it cannot. The
comparison is :mod:`switchyard.schemas.import_merge`, shared with the admin UI's import preview.

The converted table is checked with the route table's own rules in the preview, and by
``--apply`` (merged into the live table) before any secret is stored, so an import the control
service would refuse is refused here with nothing written. A ``model_list`` entry Switchyard
cannot serve at all is printed first, under its route's name, and ``--apply`` refuses while
there is one unless ``--allow-partial`` says to import the rest: a route that silently lost
an entry serves different traffic (or none) than it did under LiteLLM. Likewise ``--apply
--secrets-from-env`` refuses while a variable a key is read from is not set, unless
``--allow-missing-secrets`` says to apply anyway: a CI job with a mistyped variable name
applied routes that answer 503 and passed.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import math
import socket
import sys
from collections.abc import Collection
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import msgspec
import yaml

from switchyard.bus import identities
from switchyard.bus.audit import AuditWriter
from switchyard.bus.connect import connect
from switchyard.bus.control_admin import ControlClient
from switchyard.bus.secrets_admin import SecretsAdmin
from switchyard.config import Settings, read_env_secret
from switchyard.control.import_secrets import (
    StoredSecret,
    in_use,
    missing_keys_report,
    overwrites,
    secret_refusal,
    secrets_report,
    store_secrets,
    stored_versions,
    value_to_store,
)
from switchyard.control.litellm_import import (
    ConfigUnreadable,
    ImportResult,
    convert_text,
    to_yaml_doc,
)
from switchyard.errors import Conflict, InputError, SwitchyardError
from switchyard.runtime.provider_changes import edit_seen, table_words
from switchyard.runtime.upstreams import table_refusal
from switchyard.schemas.control import TableState
from switchyard.schemas.import_merge import NameChange, compare, merge, replaced
from switchyard.schemas.route_check import edit_problems, type_problems
from switchyard.schemas.routing import (
    Deployment,
    RouteProblem,
    RouteTable,
    route_table_problems,
)


def load(path: Path) -> ImportResult:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            "", f"cannot read the LiteLLM config {path}: {exc}", "check the path"
        ) from None
    try:
        # LiteLLM's proxy resolves os.environ/NAME in every value, from its own environment:
        # the import runs where that environment is, so numbers so named are read from it.
        return convert_text(text, read_env_secret)
    except ConfigUnreadable as exc:
        raise InputError("", f"{path}: {exc}", "pass a LiteLLM proxy config.yaml") from None


def report(result: ImportResult, out: TextIO) -> None:
    table = result.table
    print(f"mapped {len(table.routes)} routes and {len(table.providers)} providers:", file=out)
    for alias, route in table.routes.items():
        targets = ", ".join(f"{d.provider}/{d.model}" for d in route.deployments)
        extra = f"  (fallbacks: {', '.join(route.fallbacks)})" if route.fallbacks else ""
        print(f"  {alias:<24} -> {targets}{extra}", file=out)
    if result.secrets:
        print("secrets the providers refer to (store each before use):", file=out)
        for secret in result.secrets:
            if secret.env_var:
                how = f"from ${secret.env_var}"
            else:
                how = "literal key in the file; stored for you with --apply"
            print(f"  switchyard secrets put {secret.name}    # {how}", file=out)
    if result.defaults:
        print("filled in as LiteLLM does:", file=out)
        for line in result.defaults:
            print(f"  - {line}", file=out)
    dropped = {reason for _, reason in result.dropped}
    rest = [line for line in result.unmapped if line not in dropped]
    if rest:
        print("not mapped:", file=out)
        for line in rest:
            print(f"  - {line}", file=out)
    if result.dropped:
        # Last and loud: a route that lost an entry serves other traffic than under LiteLLM.
        print(f"NOT IMPORTED ({len(result.dropped)} model_list entries left out):", file=out)
        for alias, reason in result.dropped:
            print(f"  ! route {alias}: {reason}", file=out)


# How many live routes to name per replaced provider before "and N more".
_SHOW_ROUTES = 5


def _names(changes: list[NameChange]) -> str:
    return ", ".join(f"{c.section} {c.name}" for c in changes)


def _plain(value: float) -> str:
    """``value`` as a plain decimal, exactly as it reads back (0.0000025, not 2.5e-06)."""
    if not math.isfinite(value):
        return str(value)
    text = f"{Decimal(repr(value)):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _show(value: Any) -> str:
    """A field's value in one short line (struct defaults left out); never a secret: the
    route table holds secret names only."""
    if value is None or value == ():
        return "none"
    if isinstance(value, tuple):
        return ", ".join(_show(v) for v in value)
    if isinstance(value, float):  # plain: a per-token price read "2.5e-06"
        return _plain(value)
    if isinstance(value, msgspec.Struct):
        fields = msgspec.structs.fields(value)
        parts = [
            f"{f.name}={_show(getattr(value, f.name))}"
            for f in fields
            if getattr(value, f.name) != f.default and f.name not in ("provider", "model")
        ]
        head = f"{value.provider}/{value.model}" if isinstance(value, Deployment) else ""
        return " ".join(p for p in (head, *parts) if p) or "defaults"
    return str(value)[:80]


def _difference(change: NameChange, live: RouteTable, incoming: RouteTable) -> str:
    """How the imported entry differs from the live one, and what else the swap touches."""
    current: msgspec.Struct = (
        live.providers[change.name] if change.section == "provider" else live.routes[change.name]
    )
    parts = [
        f"{name}: {_show(getattr(current, name))} -> {_show(getattr(change.item, name))}"
        for name in change.differs
    ]
    text = "; ".join(parts)
    if change.section == "provider":
        users = [
            alias
            for alias, route in sorted(live.routes.items())
            if alias not in incoming.routes
            and any(d.provider == change.name for d in route.deployments)
        ]
        if users:
            shown = ", ".join(users[:_SHOW_ROUTES])
            more = f" and {len(users) - _SHOW_ROUTES} more" if len(users) > _SHOW_ROUTES else ""
            text += f"; live routes using it: {shown}{more}"
    return text


def live_report(
    state: TableState, changes: list[NameChange], incoming: RouteTable, out: TextIO
) -> None:
    """Which imported names the live table already has, and how each differs."""
    existing = [c for c in changes if c.state != "new"]
    if not existing:
        print(
            f"none of these names is in the live route table (revision {state.revision})", file=out
        )
        return
    print(f"already in the live route table (revision {state.revision}):", file=out)
    for change in existing:
        if change.state == "unchanged":
            how = "identical; left as it is"
        else:
            how = f"differs, would be replaced ({_difference(change, state.table, incoming)})"
        print(f"  {change.section} {change.name}: {how}", file=out)


def refusal(clashes: list[NameChange]) -> tuple[str, str]:
    """The problem and the fix when ``--apply`` would replace differing live entries."""
    problem = (
        f"not applied: {len(clashes)} imported entries have the name of a different live one "
        f"({_names(clashes)}); replacing them changes what those names serve"
    )
    fix = "add --replace to replace them, or rename them in the LiteLLM config"
    return problem, fix


def run_import(
    args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO = sys.stderr
) -> int:
    """Convert, report, and write (``--output``) or apply (``--apply``, ``--replace``).

    An apply that leaves keys unstored (no ``--secrets-from-env``, or
    ``--allow-missing-secrets``) exits 0: what was asked is written, and a new run would not
    change that; the providers answering 503 until each key is stored are named on ``err``.

    Raises:
        InputError: the file is unreadable; or ``--apply`` and the imported routes break
            the route table's rules (alone or merged with the live table), or entries could
            not be imported and ``--allow-partial`` was not given, or it would replace live
            entries that differ or store a secret live providers outside the import use and
            ``--replace`` was not given (nothing is written then).
        BusUnreachable: ``--apply`` and no stack answers.
    """
    result = load(Path(args.file))
    report(result, out)
    problems = type_problems(result.table) or route_table_problems(result.table)
    _problems_report(problems, out)
    if args.output:
        text = yaml.safe_dump(to_yaml_doc(result), sort_keys=False)
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote providers and routes to {args.output}", file=out)
    # The flag is defined by the CLI's parser; an older parser without it means "do not replace".
    replace = bool(getattr(args, "replace", False))
    if args.apply:
        if problems:
            raise InputError("", *_invalid(problems))
        if result.dropped and not getattr(args, "allow_partial", False):
            raise InputError("", *_partial(result.dropped))
        allow_missing = bool(getattr(args, "allow_missing_secrets", False))
        return asyncio.run(
            _apply(
                result,
                settings,
                out,
                err,
                from_env=args.secrets_from_env,
                replace=replace,
                allow_missing=allow_missing,
            )
        )
    if result.dropped:
        print(
            f"--apply refuses while {len(result.dropped)} entries are not imported unless you "
            "add --allow-partial",
            file=out,
        )
    unset = unset_variables(result, from_env=args.secrets_from_env)
    if unset:
        print(
            f"--apply refuses while {', '.join(f'${v}' for v in unset)} "
            f"{'is' if len(unset) == 1 else 'are'} not set unless you add --allow-missing-secrets",
            file=out,
        )
    asyncio.run(_dry_run_check(result, settings, out, from_env=args.secrets_from_env))
    return 0


def _problems_report(problems: list[RouteProblem], out: TextIO) -> None:
    """The route table rules the converted table breaks (the control service would refuse
    it); each names the field, the problem and the fix."""
    if not problems:
        return
    print("the route table refuses these (--apply stores and changes nothing):", file=out)
    for problem in problems:
        print(f"  ! {problem.field}: {problem.problem} ({problem.hint})", file=out)


def _invalid(problems: list[RouteProblem]) -> tuple[str, str]:
    """The problem and the fix when the imported routes break the route table's rules."""
    first = problems[0]
    more = f" and {len(problems) - 1} more (listed above)" if len(problems) > 1 else ""
    problem = f"not applied: {first.field}: {first.problem}{more}"
    return problem, f"{first.hint}, in the LiteLLM config or in the routes written by --output"


def _partial(dropped: list[tuple[str, str]]) -> tuple[str, str]:
    """The problem and the fix when entries could not be imported at all."""
    routes = ", ".join(sorted({route for route, _ in dropped}))
    problem = (
        f"not applied: {len(dropped)} model_list entries cannot be imported (routes {routes}; "
        "listed above under NOT IMPORTED); their routes would serve without them"
    )
    return problem, "fix or remove them in the LiteLLM config, or add --allow-partial"


def unset_variables(
    result: ImportResult, *, from_env: bool, stored: Collection[str] = ()
) -> list[str]:
    """With ``--secrets-from-env``: the variables keys are to be read from that are not set
    (or empty) in this shell, sorted; a key already stored (``stored``) needs none."""
    if not from_env:
        return []
    return sorted(
        {
            s.env_var
            for s in result.secrets
            if s.env_var and s.name not in stored and value_to_store(s, from_env=True) is None
        }
    )


def _missing(unset: list[str]) -> tuple[str, str]:
    """The problem and the fix when keys to read from the environment are not set."""
    names = ", ".join(f"${v}" for v in unset)
    problem = (
        f"not applied: {names} {'is' if len(unset) == 1 else 'are'} not set in this shell, so "
        "the providers using those keys would answer 503 until each is stored"
    )
    fix = (
        "set the variables (check their spelling against the LiteLLM config), or add "
        "--allow-missing-secrets to apply anyway and store them later with "
        "`switchyard secrets put NAME`"
    )
    return problem, fix


def _secret_overwrites(
    result: ImportResult, live: RouteTable, stored: dict[str, int], *, from_env: bool
) -> list[StoredSecret]:
    """The stored secrets the import would write a new version of (the same choice
    :func:`store_secrets` makes), with the live providers outside the import using each."""
    names = [s.name for s in result.secrets if value_to_store(s, from_env=from_env)]
    return overwrites(live, result.table, names, stored)


async def _dry_run_check(
    result: ImportResult, settings: Settings, out: TextIO, *, from_env: bool
) -> None:
    """Say which imported names already exist live, and which stored secrets the import
    would write over, when the platform answers; a dry run works without one, so not
    reaching it is said, not raised."""
    try:
        state, stored = await _live_state(settings)
    except SwitchyardError as exc:
        reason = str(exc).splitlines()[0]
        print(f"not checked against the live route table (could not read it: {reason})", file=out)
        return
    changes = compare(state.table, result.table)
    live_report(state, changes, result.table, out)
    found = _secret_overwrites(result, state.table, stored, from_env=from_env)
    secrets_report(found, out)
    entries, taken = replaced(changes), in_use(found)
    if entries:
        print(
            f"--apply refuses to replace the {len(entries)} live entries that differ "
            "unless you add --replace",
            file=out,
        )
    if taken:
        print(
            f"--apply refuses to store the {len(taken)} secrets that live providers outside the "
            "import use unless you add --replace",
            file=out,
        )


async def _live_state(settings: Settings) -> tuple[TableState, dict[str, int]]:
    """The live route table, and every stored secret's version (metadata only)."""
    nc = await connect(
        settings.nats_servers, settings.certs_dir, identities.ADMIN.name, max_reconnect_attempts=0
    )
    try:
        state = await ControlClient(nc).table()
        return state, await stored_versions(SecretsAdmin(nc))
    finally:
        await nc.close()


def _refusal(entries: list[NameChange], taken: list[StoredSecret]) -> tuple[str, str]:
    """One refusal naming every clash: live entries that differ, then secrets in use."""
    if not taken:
        return refusal(entries)
    if not entries:
        return secret_refusal(taken)
    problem = f"{refusal(entries)[0]}; and {secret_refusal(taken)[0].removeprefix('not applied: ')}"
    fix = (
        "add --replace to replace those entries and store those secrets anyway, or rename them "
        "in the LiteLLM config"
    )
    return problem, fix


async def _apply(
    result: ImportResult,
    settings: Settings,
    out: TextIO,
    err: TextIO,
    *,
    from_env: bool,
    replace: bool,
    allow_missing: bool = False,
) -> int:
    nc = await connect(
        settings.nats_servers, settings.certs_dir, identities.ADMIN.name, max_reconnect_attempts=0
    )
    try:
        actor = f"import:{getpass.getuser()}@{socket.gethostname()}"
        control = ControlClient(nc, actor=actor)
        state = await control.table()
        changes = compare(state.table, result.table)
        live_report(state, changes, result.table, out)
        stored = await stored_versions(SecretsAdmin(nc, actor=actor))
        unset = unset_variables(result, from_env=from_env, stored=stored)
        if unset and not allow_missing:  # refused before anything is written
            raise InputError("", *_missing(unset))
        found = _secret_overwrites(result, state.table, stored, from_env=from_env)
        secrets_report(found, out)
        entries, taken = replaced(changes), in_use(found)
        if (entries or taken) and not replace:
            # Refused before anything is written: no secret stored, no route changed.
            raise InputError("", *_refusal(entries, taken))
        # The control service's own check of the merged table, made before any secret is
        # stored: the import may clash with live routes it does not replace.
        # Its types too (a route name the table's pattern refuses passed the rules, and the
        # secrets were stored before the control service refused the table).
        merged = edit_problems(merge(state.table, result.table), state.table)
        if merged:
            _problems_report(merged, out)
            raise InputError("", *_invalid(merged))
        upstreams = settings.modelproxy.allowed_upstreams  # control's, when the config is shared
        off = table_refusal(merge(state.table, result.table), state.table, upstreams)
        if off is not None:  # refused before any key is stored
            raise InputError(off[0], f"not applied: {off[1]}")
        missing = await store_secrets(result, nc, actor, out, from_env=from_env, stored=stored)

        def change(table: RouteTable) -> RouteTable:
            # Checked again on the table actually written: a same-named entry created since
            # the check above must not be replaced silently either.
            late = [] if replace else replaced(compare(table, result.table))
            if late:
                raise Conflict(
                    f"not applied: {_names(late)} appeared in the live route table while "
                    "importing; run the import again to see how they differ"
                )
            return merge(table, result.table)

        state, was = await edit_seen(control, change)
        who = actor.removeprefix("import:")
        if state.changed is False:  # the same routes and providers again: no new revision
            print(
                "nothing changed: the live route table already has these "
                f"(revision {state.revision})",
                file=out,
            )
            missing_keys_report(missing, result.table, err)
            return 0
        detail = f"{len(result.table.routes)} routes, {len(result.table.providers)} providers"
        if entries:
            detail += f", replaced {_names(entries)}"
        if taken:
            detail += f", new versions of secrets in use {', '.join(t.name for t in taken)}"
        words = table_words(was, state.table, state.revision)
        await AuditWriter(nc, "cli").record(who, "import.litellm", "", f"{detail}; {words}")
        print(f"applied: route table revision {state.revision}", file=out)
        missing_keys_report(missing, result.table, err)
        return 0
    finally:
        await nc.close()

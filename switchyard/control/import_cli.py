"""``switchyard import litellm-config FILE``: migrate a LiteLLM proxy config.

Prints what was mapped, the secrets to store and what could not be mapped. ``--output`` writes
the providers and routes as YAML for ``switchyard.yaml``; ``--apply`` merges them into the live
route table (through the control service, compare-and-set) and stores literal keys found in the
file in the secrets service, so the new routes serve at once. Key values are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
from pathlib import Path
from typing import TextIO

import yaml

from switchyard.bus import identities
from switchyard.bus.audit import AuditWriter
from switchyard.bus.connect import connect
from switchyard.bus.control_admin import ControlClient
from switchyard.bus.secrets_admin import SecretsAdmin
from switchyard.config import Settings, read_env_secret
from switchyard.control.litellm_import import (
    ConfigUnreadable,
    ImportResult,
    convert_text,
    to_yaml_doc,
)
from switchyard.errors import InputError
from switchyard.schemas.routing import RouteTable


def load(path: Path) -> ImportResult:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            "", f"cannot read the LiteLLM config {path}: {exc}", "check the path"
        ) from None
    try:
        return convert_text(text)
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
    if result.unmapped:
        print("not mapped:", file=out)
        for line in result.unmapped:
            print(f"  - {line}", file=out)


def _merge(current: RouteTable, imported: RouteTable) -> RouteTable:
    return RouteTable(
        providers={**current.providers, **imported.providers},
        routes={**current.routes, **imported.routes},
    )


def run_import(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    result = load(Path(args.file))
    report(result, out)
    if args.output:
        text = yaml.safe_dump(to_yaml_doc(result), sort_keys=False)
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote providers and routes to {args.output}", file=out)
    if args.apply:
        asyncio.run(_apply(result, settings, out, from_env=args.secrets_from_env))
    return 0


async def _apply(result: ImportResult, settings: Settings, out: TextIO, *, from_env: bool) -> None:
    nc = await connect(
        settings.nats_servers, settings.certs_dir, identities.ADMIN.name, max_reconnect_attempts=0
    )
    try:
        actor = f"import:{getpass.getuser()}@{socket.gethostname()}"
        secrets_admin = SecretsAdmin(nc, actor=actor)
        audit = AuditWriter(nc, "cli")
        who = actor.removeprefix("import:")
        for secret in result.secrets:
            value = secret.value
            if value is None and from_env and secret.env_var:
                value = read_env_secret(secret.env_var)
            if value:
                info = await secrets_admin.put(secret.name, value)
                await audit.record(who, "secret.put", info.name, f"version {info.version}")
                print(f"stored secret {secret.name}", file=out)
            elif secret.env_var:
                # The route is applied anyway; say why it will answer 503 secret_unavailable.
                why = "is not set in this shell" if from_env else "not read: no --secrets-from-env"
                print(
                    f"not stored: {secret.name} (${secret.env_var} {why}); its routes answer 503 "
                    f"until you run `switchyard secrets put {secret.name}`",
                    file=out,
                )
        state = await ControlClient(nc, actor=actor).edit(lambda t: _merge(t, result.table))
        detail = f"{len(result.table.routes)} routes, {len(result.table.providers)} providers"
        await audit.record(who, "import.litellm", "", f"{detail}; revision {state.revision}")
        print(f"applied: route table revision {state.revision}", file=out)
    finally:
        await nc.close()

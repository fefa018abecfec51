"""``switchyard secrets ...``: manage provider keys through the secrets service.

Values are read from a hidden prompt, stdin or a file, never from the command line (shell
history and ``ps`` would keep them), and are never printed back. ``rm`` of a secret a provider
names says which routes it strands (nothing left to answer) and which only lose deployments,
then asks for the name (or ``--force`` without a terminal); ``list`` also shows the secrets
providers name that are not stored. Both read the live route table from the control service,
the same way the admin UI does.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
from typing import TextIO

import msgspec
from nats.aio.client import Client as NATS

from switchyard.bus import identities
from switchyard.bus.audit import AuditWriter
from switchyard.bus.connect import connect
from switchyard.bus.control_admin import ControlClient
from switchyard.bus.secrets_admin import SecretsAdmin
from switchyard.config import Settings
from switchyard.errors import ApiError, BusError, InputError
from switchyard.runtime.provider_changes import secret_delete_words
from switchyard.schemas.routing import RouteTable, SecretUsers
from switchyard.schemas.secrets import COOLDOWNS_RUN_ON, SecretInfo, SecretWritten, written_words

TABLE_TIMEOUT_S = 5.0


def read_value(args: argparse.Namespace, stdin: TextIO) -> str:
    """The secret value from ``--value-file``, ``--from-stdin`` or a hidden prompt.

    Raises:
        InputError: the value is empty or the file cannot be read.
    """
    value: str
    if args.value_file is not None:
        try:
            value = args.value_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(
                "--value-file", f"cannot read {args.value_file}: {exc.strerror}", "check the path"
            ) from None
    elif args.from_stdin or not stdin.isatty():
        value = stdin.read()
    else:
        value = getpass.getpass(f"Value for {args.name} (input hidden): ")
    # No API key starts or ends with a blank: a pasted one carried a space the provider then
    # refused on every call (and the secrets service refuses it). The ends go, not the middle.
    value = value.strip()
    if not value:
        raise InputError("", "the secret value is empty", "pass it on stdin or with --value-file")
    return value


def _usage_lines(name: str, users: SecretUsers) -> list[str]:
    lines = [f"warning: `{name}` is the key of provider(s) {', '.join(users.providers)}"]
    if users.stranded:
        lines.append(f"  routes left with nothing to answer (503): {', '.join(users.stranded)}")
    if users.fallback_only:
        notes = ", ".join(users.fallback_notes())
        lines.append(f"  routes that lose all their own deployments: {notes}")
    if users.degraded:
        lines.append(
            f"  routes that lose those deployments (their others answer): "
            f"{', '.join(users.degraded)}"
        )
    return lines


async def _live_table(nc: NATS) -> tuple[RouteTable | None, str]:
    """The live route table, or None and why it could not be read."""
    try:
        return (await ControlClient(nc, timeout=TABLE_TIMEOUT_S).table()).table, ""
    except (ApiError, BusError, TimeoutError) as exc:
        return None, str(exc) or type(exc).__name__


async def _confirm_delete(
    nc: NATS, args: argparse.Namespace, stdin: TextIO, err: TextIO
) -> tuple[SecretUsers | None, str]:
    """Say what deleting ``args.name`` breaks, then make sure it is meant; returns who uses
    it (None: that could not be told) and how a delete that breaks something was meant
    (``""`` when nothing is in the way), for the audit entry.

    Raises:
        InputError: it is in use (or that cannot be told) and was not confirmed.
    """
    table, why = await _live_table(nc)
    users = None if table is None else table.secret_users(args.name)
    if users is None:
        lines = [f"warning: cannot tell whether a provider uses `{args.name}` ({why})"]
    elif not users.providers:
        return users, ""
    else:
        lines = _usage_lines(args.name, users)
    for line in lines:
        print(line, file=err)
    if args.force:
        return users, "forced (--force)"
    if not stdin.isatty():  # nobody to ask: a script must say it means it
        raise InputError("", f"not deleting `{args.name}`", "pass --force to delete it anyway")
    print(f"Type {args.name} to delete it: ", end="", file=err, flush=True)
    if stdin.readline().strip() != args.name:
        raise InputError("", f"not deleting `{args.name}`", "nothing was changed")
    return users, "confirmed by typing its name"


def _row(info: SecretInfo) -> str:
    last4 = f"...{info.last4}" if info.last4 else ""
    when, who = info.updated_at[:19], info.updated_by
    return f"{info.name:<24} v{info.version:<4} {info.provider:<12} {last4:<8} {when}  {who}"


async def run_secrets_command(
    args: argparse.Namespace,
    settings: Settings,
    stdin: TextIO,
    out: TextIO,
    err: TextIO = sys.stderr,
) -> int:
    action = args.secrets_command
    # Connect first: nobody should type a key into a prompt only to learn no stack is running.
    nc = await connect(
        settings.nats_servers, settings.certs_dir, identities.ADMIN.name, max_reconnect_attempts=0
    )
    try:
        value = read_value(args, stdin) if action in ("put", "rotate") else ""
        admin = SecretsAdmin(nc, actor=f"cli:{getpass.getuser()}@{socket.gethostname()}")
        audit = AuditWriter(nc, "cli")
        who = f"{getpass.getuser()}@{socket.gethostname()}"
        if action == "put":
            info = await admin.put(args.name, value, provider=args.provider)
            await audit.record(who, "secret.put", info.name, written_words(info))
            print(_said("stored", info), file=out)
        elif action == "rotate":
            info = await admin.rotate(args.name, value)
            await audit.record(who, "secret.rotate", info.name, written_words(info))
            print(_said("rotated", info, "to "), file=out)
        elif action == "rm":
            users, how = await _confirm_delete(nc, args, stdin, err)
            await admin.delete(args.name)
            await audit.record(who, "secret.delete", args.name, secret_delete_words(users, how))
            print(f"deleted {args.name}", file=out)
        elif action == "show":
            shown = await admin.info(args.name)
            print(json.dumps(msgspec.to_builtins(shown)) if args.json else _row(shown), file=out)
        else:
            await _list(nc, admin, args, out, err)
    finally:
        await nc.close()
    return 0


def _said(done: str, info: SecretWritten, to: str = "") -> str:
    if not info.changed:  # a re-run with the same key: no new version, no cooldown ended
        return (
            f"unchanged: {info.name} holds that value already, version {info.version} kept "
            f"(...{info.last4}); {COOLDOWNS_RUN_ON}"
        )
    return f"{done} {info.name} {to}version {info.version} (...{info.last4})"


async def _list(
    nc: NATS, admin: SecretsAdmin, args: argparse.Namespace, out: TextIO, err: TextIO
) -> None:
    """The stored secrets, then the ones providers name that are not stored (their routes
    answer 503 ``secret_unavailable`` or fall back until someone stores them)."""
    listing = await admin.list()
    table, why = await _live_table(nc)
    missing = table.unstored_secrets({s.name for s in listing}) if table is not None else []
    if args.json:  # the stored list stays what it was; what is missing is said on stderr
        print(json.dumps(msgspec.to_builtins(listing), indent=2), file=out)
    elif not listing and not missing:
        print("no secrets stored yet: add one with `switchyard secrets put NAME`", file=out)
    else:
        for info in listing:
            print(_row(info), file=out)
    for secret, provider in missing:
        print(
            f"missing: `{secret}` is named by provider {provider} but not stored; "
            f"store it with `switchyard secrets put {secret}`",
            file=err if args.json else out,
        )
    if table is None:
        print(f"note: cannot tell which secrets providers name but lack ({why})", file=err)

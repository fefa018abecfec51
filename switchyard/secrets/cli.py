"""``switchyard secrets ...``: manage provider keys through the secrets service.

Values are read from a hidden prompt, stdin or a file, never from the command line (shell
history and ``ps`` would keep them), and are never printed back.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
from typing import TextIO

import msgspec

from switchyard.bus import identities
from switchyard.bus.audit import AuditWriter
from switchyard.bus.connect import connect
from switchyard.bus.secrets_admin import SecretsAdmin
from switchyard.config import Settings
from switchyard.errors import InputError
from switchyard.schemas.secrets import SecretInfo


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
    value = value.rstrip("\r\n")
    if not value:
        raise InputError("", "the secret value is empty", "pass it on stdin or with --value-file")
    return value


def _row(info: SecretInfo) -> str:
    last4 = f"...{info.last4}" if info.last4 else ""
    when, who = info.updated_at[:19], info.updated_by
    return f"{info.name:<24} v{info.version:<4} {info.provider:<12} {last4:<8} {when}  {who}"


async def run_secrets_command(
    args: argparse.Namespace, settings: Settings, stdin: TextIO, out: TextIO
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
            await audit.record(who, "secret.put", info.name, f"version {info.version}")
            print(f"stored {info.name} version {info.version} (...{info.last4})", file=out)
        elif action == "rotate":
            info = await admin.rotate(args.name, value)
            await audit.record(who, "secret.rotate", info.name, f"version {info.version}")
            print(f"rotated {info.name} to version {info.version} (...{info.last4})", file=out)
        elif action == "rm":
            await admin.delete(args.name)
            await audit.record(who, "secret.delete", args.name)
            print(f"deleted {args.name}", file=out)
        elif action == "show":
            info = await admin.info(args.name)
            print(json.dumps(msgspec.to_builtins(info)) if args.json else _row(info), file=out)
        else:
            listing = await admin.list()
            if args.json:
                print(json.dumps(msgspec.to_builtins(listing), indent=2), file=out)
            elif not listing:
                print("no secrets stored yet: add one with `switchyard secrets put NAME`", file=out)
            else:
                for info in listing:
                    print(_row(info), file=out)
    finally:
        await nc.close()
    return 0

"""``switchyard keys create|list|show|update|rotate|revoke``: client keys from the command line.

Talks to the key bucket as the admin identity (certificate) and reads spend with the read-only
admin Valkey role. ``create`` and ``rotate`` print the new key once; nothing ever prints it
again (``create --idempotency-key`` run again names the key it made: :func:`create_once_cli`).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import re
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from nats.aio.client import Client as NATS

from switchyard.admin.audit_words import created_words, update_seen, update_words
from switchyard.admin.key_damage import DamagedRecord
from switchyard.admin.key_idempotency import Caller, IdempotentCreates, body_digest, valid_value
from switchyard.admin.key_once import create_once
from switchyard.admin.key_rotation import grace_words, rotated_doc
from switchyard.admin.keys import KeyAdmin, namesake_warning, public_record
from switchyard.admin.spend import SpendReader, SpendUnavailable
from switchyard.bus import identities
from switchyard.bus.audit import AuditWriter
from switchyard.bus.connect import connect
from switchyard.config import Settings
from switchyard.errors import Conflict, InputError
from switchyard.schemas.keys import ClientKey
from switchyard.schemas.money import dollars

_DURATION = re.compile(r"(\d+)([smhd])")  # fullmatch: "1h\n" is not a duration
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
NEVER = "never"


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "owner": args.owner,
        "team": args.team,
        "rpm": args.rpm,
        "tpm": args.tpm,
        "max_parallel": args.max_parallel,
        "budget_usd": args.budget,
        "budget_period": args.budget_period,
        "weight": args.weight,
        "priority": args.priority,
        "max_priority": args.max_priority,
    }
    if args.models is not None:
        models = tuple(m.strip() for m in args.models.split(",") if m.strip())
        if not models:  # a key allowed no model could not make a single request
            raise InputError(
                "--models",
                "the list of models is empty",
                "name at least one alias (wildcards work: gpt-*), or pass --models '*' for "
                "every model; to stop a key, use `switchyard keys revoke`",
            )
        fields["models"] = models
    if args.expires_in == NEVER:  # `keys update`: remove the expiry (the API's expires_at 0)
        fields["expires_at"] = 0
    elif args.expires_in is not None:
        match = _DURATION.fullmatch(args.expires_in)
        if not match:
            raise InputError(
                "--expires-in",
                f"`{args.expires_in}` is not a duration",
                f"use e.g. 30d or 12h, or {NEVER} for a key that does not expire",
            )
        seconds = int(match.group(1)) * _UNIT[match.group(2)]
        if seconds <= 0:  # the key would be expired the moment it is written
            raise InputError(
                "--expires-in",
                f"`{args.expires_in}` is no time at all",
                f"use e.g. 30d or 12h, or {NEVER} for no expiry; to stop a key now, use "
                "`switchyard keys revoke`",
            )
        fields["expires_at"] = time.time() + seconds
    return {k: v for k, v in fields.items() if v is not None}


def _state(record: ClientKey) -> str:
    return "revoked" if record.disabled else ("expired" if record.expired() else "active")


def _limits(record: ClientKey) -> str:
    limits = [
        f"{label} {value}"
        for label, value in (
            ("rpm", record.rpm),
            ("tpm", record.tpm),
            ("parallel", record.max_parallel),
        )
        if value
    ]
    if record.budget_usd:
        limits.append(f"budget {dollars(record.budget_usd)} {record.budget_period}")
    return ", ".join(limits)


def _when(stamp: float | None) -> str:
    if not stamp:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(stamp))


def _row(record: ClientKey) -> str:
    extra = [f"team {record.team}"] if record.team else []
    if record.expires_at:
        extra.append(f"expires {_when(record.expires_at)}")
    return (
        f"{record.id:<22} {record.name:<18} ...{record.hint:<5} {_state(record):<8} "
        f"models {','.join(record.models):<16} {'; '.join([_limits(record), *extra]).strip('; ')}"
    )


def _money(record: ClientKey, spend: dict[str, Any] | None) -> str:
    if spend is None:
        return "unavailable (Valkey/Redis cannot be read)"
    money = f"{dollars(spend['period_spend_usd'])} this {record.budget_period} period"
    if record.budget_usd:
        money += f" of {dollars(record.budget_usd)}"
        if spend.get("period_resets_at"):
            money += f" (resets {_when(spend['period_resets_at'])})"
        if spend["period_spend_usd"] >= record.budget_usd:
            # HTTP at once; NATS callers within admin.budget_watch_s + 1 s (keys-and-limits.md).
            money += " [over budget: refused]"
    return money + f"; {dollars(spend['total_spend_usd'])} in all"


def _card(record: ClientKey, spend: dict[str, Any] | None) -> str:
    """``keys show`` for people (``--json`` for scripts); ``spend`` None when unreadable."""
    money = _money(record, spend)
    lines = [
        f"{record.id}  {record.name}  (...{record.hint})  {_state(record)}",
        f"  team       {record.team or '-'}",
        f"  owner      {record.owner or '-'}",
        f"  models     {', '.join(record.models)}",
        f"  limits     {_limits(record) or 'none'}",
        f"  spend      {money}",
        f"  priority   {record.priority} (at most {record.max_priority}), weight {record.weight:g}",
        f"  created    {_when(record.created_at)}",
        *([f"  rotated    {_when(record.rotated_at)}"] if record.rotated_at else []),
        f"  expires    {_when(record.expires_at)}",
    ]
    return "\n".join(lines)


async def run_keys(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    nc = await connect(
        settings.nats_servers, settings.certs_dir, identities.ADMIN.name, max_reconnect_attempts=0
    )
    try:
        admin = KeyAdmin(nc.jetstream(timeout=10), names=True)
        audit = AuditWriter(nc, "cli")
        actor = f"{getpass.getuser()}@{socket.gethostname()}"
        action = args.keys_command
        if action == "create" and getattr(args, "idempotency_key", None) is not None:
            await create_once_cli(admin, audit, actor, args, out, nc=nc)
        elif action == "create":
            api_key, record = await admin.create(args.name, **_fields(args))
            await audit.record(actor, "key.create", record.id, created_words(record))
            others = await admin.namesakes(record)
            warning = namesake_warning(record.name, others) if others else ""
            if args.json:
                doc = {"key": api_key, "record": public_record(record)}
                print(json.dumps({**doc, "warning": warning} if warning else doc), file=out)
            else:
                print(f"created {record.id} ({record.name})", file=out)
                print(f"key: {api_key}", file=out)
                print("store it now: it is shown only once", file=out)
            if warning:
                print(f"warning: {warning}", file=sys.stderr)
        elif action == "list":
            scan = await admin.scan()
            records = [record for record, _ in scan.records]
            if args.json:
                print(json.dumps([public_record(r) for r in records], indent=2), file=out)
            else:
                for record in records:
                    print(_row(record), file=out)
            for damaged in scan.damaged:
                print(_unreadable(damaged), file=sys.stderr)
        elif action == "show":
            return await _show(admin, args, settings, out)
        elif action == "update":
            fields = _fields(args)
            if args.enable:
                fields["disabled"] = False
            record, before = await update_seen(admin, args.key_id, fields)
            await audit.record(actor, "key.update", record.id, update_words(before, record, fields))
            print(
                json.dumps(public_record(record)) if args.json else f"updated {record.id}", file=out
            )
            note = period_note(before.budget_period, record.budget_period) if before else None
            if note:
                print(f"note: {note}", file=sys.stderr)
        elif action == "rotate":
            await _rotate(admin, audit, actor, args, out)
        elif action == "revoke":
            record = await admin.revoke(args.key_id)
            await audit.record(actor, "key.revoke", record.id, f"name {record.name!r}")
            print(
                json.dumps(public_record(record)) if args.json else f"revoked {record.id}", file=out
            )
    finally:
        await nc.close()
    return 0


# Its values apart from the API's and the web app's (key_once.py): ended by a space, which
# no header value (nor --idempotency-key's) may hold (key_idempotency.valid_value), so
# `Idempotency-Key: cli.X` is never `--idempotency-key X`.
CLI_PREFIX = "cli "
CLI = Caller("--idempotency-key", None, "or run the create without --idempotency-key")


async def create_once_cli(
    admin: KeyAdmin,
    audit: AuditWriter,
    actor: str,
    args: argparse.Namespace,
    out: TextIO,
    *,
    nc: NATS,
) -> None:
    """``keys create --idempotency-key VALUE``: run again with the same value and options
    within a day (a retry after a timeout, a CI job run twice), it names the key the first
    run made, without its secret, and makes none (:mod:`switchyard.admin.key_once`, the
    bucket and rules of the API's ``Idempotency-Key``). The options are compared as given
    (``--expires-in 30d``, not the time it comes to).

    Raises:
        InputError: the value is not 1 to 255 printable ASCII characters without spaces,
            or was used with other options; or a create with it is still in progress.
    """
    value = args.idempotency_key
    if not valid_value(value):
        raise InputError(
            "--idempotency-key",
            "the value must be 1 to 255 printable ASCII characters without spaces",
            "a UUID is usual (uuidgen)",
        )
    fields = _fields(args)
    given = {k: v for k, v in fields.items() if k != "expires_at"}
    body = body_digest({"name": args.name, **given, "expires_in": args.expires_in})

    async def make(key_id: str, reserve: Callable[[], Awaitable[bool]]) -> dict[str, Any]:
        api_key, record = await admin.create(args.name, key_id=key_id, reserve=reserve, **fields)
        await audit.record(actor, "key.create", record.id, created_words(record))
        doc: dict[str, Any] = {"key": api_key, "record": public_record(record)}
        others = await admin.namesakes(record)
        if others:
            doc["warning"] = namesake_warning(record.name, others)
        return doc

    store = IdempotentCreates(nc.jetstream(timeout=10), nc=nc)
    try:
        once = await create_once(store, admin, CLI_PREFIX + value, body, make, caller=CLI)
    except Conflict as exc:
        raise _conflict(exc) from None
    record, warning = once.answer["record"], once.answer.get("warning", "")
    lost = f"its key was shown only then; if it was lost: switchyard keys rotate {record['id']}"
    if args.json:
        doc = once.answer
        if once.replay:
            doc = {"key": None, **doc, "idempotent_replay": True, "key_note": lost}
        print(json.dumps(doc), file=out)
    elif once.replay:
        print(
            f"already created {record['id']} ({record['name']}) with this --idempotency-key; "
            "no second key made",
            file=out,
        )
        print(lost, file=out)
    else:
        print(f"created {record['id']} ({record['name']})", file=out)
        print(f"key: {once.answer['key']}", file=out)
        print("store it now: it is shown only once", file=out)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def _conflict(exc: Conflict) -> InputError:
    """The store's 409 in the CLI's words."""
    if exc.code == "idempotency_key_reused":
        return InputError(
            "--idempotency-key",
            "this value was used with other options in the last day",
            "a retry repeats the same options; a new key needs a new value",
        )
    return InputError(
        "--idempotency-key",
        "a create with this value is still in progress (or failed less than a minute ago)",
        "run the same command again in a moment: it makes at most one key",
    )


async def _rotate(
    admin: KeyAdmin, audit: AuditWriter, actor: str, args: argparse.Namespace, out: TextIO
) -> None:
    """``keys rotate``: the new secret printed once, as ``create`` prints a new key."""
    grace = grace_seconds(args.grace)
    api_key, record = await admin.rotate(args.key_id, grace)
    await audit.record(actor, "key.rotate", record.id, grace_words(grace))
    if args.json:
        print(json.dumps(rotated_doc(api_key, record, grace)), file=out)
        return
    print(f"rotated {record.id} ({record.name}); {grace_words(grace)}", file=out)
    print(f"key: {api_key}", file=out)
    print("store it now: it is shown only once", file=out)


def grace_seconds(value: str) -> int:
    """``--grace``: seconds, or a duration (30m, 12h, 1d). Its range is the store's check.

    Raises:
        InputError: neither.
    """
    if value.isdecimal():
        return int(value)
    match = _DURATION.fullmatch(value)
    if not match:
        raise InputError(
            "--grace", f"`{value}` is not a duration", "use seconds, or e.g. 30m, 12h, 1d"
        )
    return int(match.group(1)) * _UNIT[match.group(2)]


def period_note(old: str, new: str) -> str | None:
    """What a changed budget period means for the spend the budget is held to; None when
    the period did not change. Spend is counted per period in its own counter (Valkey), and
    only the key's current period's counter grows, so nothing is carried over."""
    if old == new:
        return None
    return (
        f"the budget period is now {_period_name(new)}: its spend starts from what the "
        f"current {_period_name(new)} period's counter holds (only what was billed while the "
        f"key had that period); spend billed under {_period_name(old)} is not carried over "
        "(see `switchyard keys show`)"
    )


def _period_name(period: str) -> str:
    return f"{period}-second" if period.isdecimal() else f"`{period}`"


def _unreadable(damaged: DamagedRecord) -> str:
    """The warning for a record ``keys list`` leaves out: which, why, and how to shut it."""
    which = f"key {damaged.key_id}" if damaged.key_id else f"record {damaged.name} (no key id)"
    return (
        f"warning: {which}: its stored record cannot be read ({damaged.reason}); requests "
        f"with it are refused. Revoke it with `switchyard keys revoke {damaged.handle}`"
    )


async def _show(admin: KeyAdmin, args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """The key, and its spend if Valkey/Redis answers. Without spend the record is still
    shown (it lives in NATS), then the failure is raised: one line, non-zero exit."""
    record = await admin.find(args.key_id)
    reader = SpendReader(settings)
    unavailable: SpendUnavailable | None = None
    usage: dict[str, Any] | None = None
    try:
        usage = await reader.for_key(record)
    except SpendUnavailable as exc:
        unavailable = exc
    finally:
        await reader.close()
    if args.json:
        doc = public_record(record, usage)
        if unavailable is not None:
            doc.update(spend=None, spend_unavailable=unavailable.message)
        print(json.dumps(doc), file=out)
    else:
        print(_card(record, usage), file=out)
    if unavailable is not None:
        raise unavailable
    return 0


def keys_command(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    return asyncio.run(run_keys(args, settings, out))

"""``switchyard routes sync``: make the live route table what the settings file says.

By default a preview: what replacing the live table with the file's providers and routes would
add, remove and change. ``--merge`` keeps entries that exist only in the live table (added at run
time); ``--apply`` writes the result through the control service, compare-and-set against the
revision the preview was computed from. A file that defines no routes and no providers (a
missing file, a lost ``routes:`` block) is never applied as a replacement: it would empty the
live table.

A preview and its ``--apply`` are two runs: a route added in between was removed by the apply
without anyone seeing it in a preview. ``--apply --expected-revision N`` (N the revision the
approved preview printed) refuses unless the live table is still at N, so what is written is
what was approved; ``--exit-code`` makes the preview exit with the CLI's drift code (4) when
there is something to change (as ``git diff --exit-code`` exits 1), for a job that only checks:
not 1, which is what a check that could not run exits with.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
from pathlib import Path
from typing import TextIO

from switchyard.bus import identities
from switchyard.bus.audit import AuditWriter
from switchyard.bus.connect import connect
from switchyard.bus.control_admin import ControlClient
from switchyard.config import Settings
from switchyard.control.drift import diff, drift_note, merge
from switchyard.errors import Conflict, InputError
from switchyard.runtime.provider_changes import table_words
from switchyard.schemas.control import TableState


def manages_routes(settings: Settings) -> bool:
    """Whether the settings file defines routes or providers (else it does not manage them)."""
    return bool(settings.routes or settings.providers)


async def live_table(settings: Settings) -> TableState:
    """The live route table and its revision, from the control service.

    Raises:
        BusUnreachable: no stack answers.
        ServiceUnavailable: the control service is not running.
    """
    nc = await connect(
        settings.nats_servers, settings.certs_dir, identities.ADMIN.name, max_reconnect_attempts=0
    )
    try:
        return await ControlClient(nc).table()
    finally:
        await nc.close()


async def file_drift(settings: Settings, config_file: Path | None) -> list[str]:
    """The note for ``up`` and ``config`` when the file's routes are not the live ones."""
    if config_file is None or not manages_routes(settings):
        return []
    state = await live_table(settings)
    return drift_note(state.revision, diff(state.table, settings.route_table), config_file.name)


async def _sync(
    settings: Settings,
    config_file: Path | None,
    *,
    merging: bool,
    apply: bool,
    out: TextIO,
    expected: int | None = None,
    drift: int = 0,
) -> int:
    """Preview, or ``apply``; returns the exit status: ``drift`` for a preview that found
    something to change (0 unless ``--exit-code``), else 0."""
    source = config_file.name if config_file else "the default settings"
    nc = await connect(
        settings.nats_servers, settings.certs_dir, identities.ADMIN.name, max_reconnect_attempts=0
    )
    try:
        who = f"{getpass.getuser()}@{socket.gethostname()}"
        control = ControlClient(nc, actor=f"routes-sync:{who}")
        state = await control.table()
        if expected is not None and state.revision != expected:
            raise Conflict(
                f"the live route table is at revision {state.revision}, not {expected}: it "
                "changed since the preview you approved. Nothing written: run the preview "
                "again and apply with the revision it prints"
            )
        target = merge(state.table, settings.route_table) if merging else settings.route_table
        changes = diff(state.table, target)
        if not changes:
            print(
                f"the live route table (revision {state.revision}) already matches {source}",
                file=out,
            )
            return 0
        what = "merging the routes of" if merging else "replacing the live table with"
        print(f"{what} {source} (live revision {state.revision}):", file=out)
        for change in changes:
            print(f"  {change.describe()}", file=out)
        empty = not (merging or manages_routes(settings))
        refusal = (
            f"{source} defines no routes and no providers: applying it would remove every "
            "live route but the built-in demo (a file that lost its routes: block, or none "
            "found). Nothing written: delete routes in the web app or through the admin API, "
            "or give a file that lists the routes to keep"
        )
        if not apply:
            print(
                f"nothing written; --apply would refuse: {refusal}"
                if empty
                else f"nothing written: run again with --apply --expected-revision "
                f"{state.revision} to write it (refused if the live table changes meanwhile)",
                file=out,
            )
            return drift
        if empty:
            raise InputError("", refusal)
        try:
            written = await control.put_table(target, state.revision)
        except Conflict:
            raise Conflict(
                f"the live route table changed after revision {state.revision} (someone else "
                "edited it); run the command again to see the new preview"
            ) from None
        if written.changed is False:  # the same table after all (as the file, live): no write
            print(
                f"nothing changed: the live route table is already this (revision "
                f"{written.revision})",
                file=out,
            )
            return 0
        words = table_words(state.table, written.table, written.revision)
        detail = f"{len(changes)} changes from {source}; {words}"
        action = "route.merge" if merging else "route.sync"
        await AuditWriter(nc, "cli").record(who, action, "", detail)  # as the API's changes are
        print(f"applied: route table revision {written.revision}", file=out)
        return 0
    finally:
        await nc.close()


def run_sync(
    args: argparse.Namespace,
    settings: Settings,
    config_file: Path | None,
    out: TextIO,
    *,
    drift: int,
) -> int:
    """``switchyard routes sync``; ``drift`` is the exit status of a preview with
    ``--exit-code`` that finds the live table differs from the file."""
    return asyncio.run(
        _sync(
            settings,
            config_file,
            merging=args.merge,
            apply=args.apply,
            out=out,
            expected=args.expected_revision,
            drift=drift if args.exit_code else 0,
        )
    )

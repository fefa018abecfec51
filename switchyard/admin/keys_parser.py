"""``switchyard keys``: the command line's parser for client API keys (create, list, show,
update, rotate, revoke); :mod:`switchyard.admin.keys_cli` runs what it parses."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from switchyard.admin.key_options import add_key_options


def add_keys_parser(
    sub: Any,
    common: Callable[[argparse.ArgumentParser], None],
    handler: Callable[..., int],
) -> None:
    """The ``keys`` command's actions and options (the handler runs them)."""
    p = sub.add_parser("keys", help="client API keys: create, list, show, update, rotate, revoke")
    keys = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    c = keys.add_parser("create", help="a new key (printed once)")
    common(c)
    c.add_argument("name")
    add_key_options(c)
    c.add_argument(
        "--idempotency-key",
        metavar="VALUE",
        help="run again with the same VALUE and options within a day (a retry after a "
        "timeout), it names the key the first run made and makes none (its secret is not "
        "shown again); a UUID is usual",
    )
    c.set_defaults(handler=handler)
    c = keys.add_parser("list", help="every key (never the key itself)")
    common(c)
    c.add_argument("--json", action="store_true")
    c.set_defaults(handler=handler)
    for action, text in (("show", "one key with its spend"), ("revoke", "stop a key everywhere")):
        c = keys.add_parser(action, help=text)
        common(c)
        c.add_argument("key_id", metavar="KEY", help="the key's id, or its name if unique")
        c.add_argument("--json", action="store_true")
        c.set_defaults(handler=handler)
    c = keys.add_parser(
        "rotate",
        help="a new secret for a key (printed once); id, limits, budget and spend stay",
        description="Give the key a new secret, printed once. The key keeps its id, settings, "
        "budget period and spend; the old secret is refused from now on, or after --grace.",
    )
    common(c)
    c.add_argument("key_id", metavar="KEY", help="the key's id, or its name if unique")
    c.add_argument(
        "--grace",
        default="0",
        help="how long the old secret keeps working, for rolling the new one out to many "
        "clients: seconds or 30m, 12h, 1d (at most a day; default 0: refused at once, as a "
        "leaked secret should be)",
    )
    c.add_argument("--json", action="store_true")
    c.set_defaults(handler=handler)
    c = keys.add_parser("update", help="change models, limits, budget or expiry")
    common(c)
    c.add_argument("key_id", metavar="KEY", help="the key's id, or its name if unique")
    add_key_options(c)
    c.add_argument("--enable", action="store_true", help="undo a revocation")
    c.set_defaults(handler=handler)

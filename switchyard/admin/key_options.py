"""The options ``switchyard keys create`` and ``update`` take, apart from the commands.

The CLI's parser is built for every command (``switchyard top`` too); the key commands
themselves import NATS, Redis and the admin's key store, about half a second, so the options
live here and the commands are imported only when run.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from switchyard.admin.key_rules import number_problem, rule_text


def _number(field: str) -> Callable[[str], float]:
    """An argparse type for the numeric key setting ``field``: refuses what the setting does
    not take (``float()`` reads ``inf``, ``nan`` and ``1e309``) with its rule in words."""

    def parse(text: str) -> float:
        try:
            number = float(text)
        except ValueError:
            number = float("nan")
        if number_problem(field, number) is not None:
            raise argparse.ArgumentTypeError(rule_text(field)[:-1])
        return number

    parse.__name__ = field
    return parse


def add_key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--owner", help="who the key belongs to")
    parser.add_argument("--team", help="tenant for accounting")
    parser.add_argument(
        "--models",
        help=(
            "allowed model aliases, comma-separated (wildcards: gpt-*); "
            "a key created without it may call every model (*)"
        ),
    )
    parser.add_argument("--rpm", type=int, help="requests per minute (0: unlimited)")
    parser.add_argument("--tpm", type=int, help="tokens per minute (0: unlimited)")
    parser.add_argument("--max-parallel", type=int, help="concurrent requests (0: unlimited)")
    parser.add_argument(
        "--budget",
        type=_number("budget_usd"),
        help="USD per budget period (0: unlimited); binds the HTTP API and Batch API, "
        "not calls over the NATS API",
    )
    parser.add_argument(
        "--budget-period", help="daily, weekly, monthly (default), total, or seconds"
    )
    parser.add_argument(
        "--expires-in",
        help="e.g. 30d, 12h; the key stops working after it (never: it does not expire)",
    )
    parser.add_argument(
        "--weight",
        type=_number("weight"),
        help="fair share of a saturated deployment (default 1)",
    )
    parser.add_argument(
        "--priority",
        choices=("interactive", "default", "batch"),
        help="class of requests that ask for none (default: default)",
    )
    parser.add_argument(
        "--max-priority",
        choices=("interactive", "default", "batch"),
        help="highest class the key may ask for (default: interactive)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")

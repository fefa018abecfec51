"""Money as text for people, outside the web app (the CLI, ``switchyard top``, 429 messages).

Spend is counted in integer nano-dollars (``limits.keys.NANO``), so an amount is shown exactly
to the nano-dollar, in plain decimals: never an exponent (``:g`` printed a budget of
$1,234,567.891 as ``$1.23457e+06`` and a spend of 144 nano-dollars as ``$1.44e-07``), no
thousands separators (a script or spreadsheet reads the digits as they are), trailing zeros
trimmed to whole dollars or at least cents: ``$1234567.891``, ``$0.000000144``, ``$1.50``,
``$100``.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Context, Decimal

PLACES = 9  # nano-dollars
_NANO = Decimal(1).scaleb(-PLACES)
# Enough digits for any float's whole part plus the nano-dollars (the default 28 raised
# InvalidOperation from $10^19 on: a garbled or hostile overview's amount crashed `top`).
_WIDE = Context(prec=400)


def dollars(value: float) -> str:
    """``value`` dollars as text, to the nano-dollar; an amount set below a nano-dollar (a
    budget typed that small) is shown as given rather than as $0."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"${value}"
    # repr: the shortest text that reads back as this float (0.1, not 0.1000000000000000055).
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    shown = exact.quantize(_NANO, ROUND_HALF_EVEN, context=_WIDE)
    return _plain(exact if shown == 0 and exact != 0 else shown)


def nano_dollars(nano: int) -> str:
    """An amount counted in integer nano-dollars, as text (exact)."""
    return _plain(Decimal(nano).scaleb(-PLACES))


def _plain(amount: Decimal) -> str:
    if amount == 0:
        return "$0"
    whole, _, fraction = f"{abs(amount):f}".partition(".")
    fraction = fraction.rstrip("0")
    sign = "-" if amount < 0 else ""
    if not fraction:
        return f"{sign}${whole}"
    return f"{sign}${whole}.{fraction.ljust(2, '0')}"

"""Every float a person sets in a stored record is finite.

JSON has no infinity and no NaN: msgspec writes either as ``null``, which no reader of the
record accepts, so a record holding one could be written and then never read again (a client
key that nobody could use, list or revoke). Python's ``float()`` reads ``inf``, ``nan`` and
``1e309`` (infinity), and a YAML ``.inf`` is a float too, so forms and command lines check
what they read (saying which field and what it takes), and these types are the last check
before a write. Their bound is the largest finite float: any record JSON could carry before
them still reads.
"""

from __future__ import annotations

import math
import sys
from typing import Annotated

import msgspec

LARGEST = sys.float_info.max
Finite = Annotated[float, msgspec.Meta(ge=-LARGEST, le=LARGEST)]
NonNegative = Annotated[float, msgspec.Meta(ge=0, le=LARGEST)]
AboveZero = Annotated[float, msgspec.Meta(gt=0, le=LARGEST)]


def finite(value: object) -> bool:
    """Whether ``value`` is a number JSON can carry (an int or a finite float; no bool)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def read_finite(text: str) -> float:
    """``float(text)``, refusing what JSON cannot carry.

    Raises:
        ValueError: not a number, or not a finite one (``inf``, ``nan``, ``1e309``).
    """
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text!r} is not a finite number")
    return number

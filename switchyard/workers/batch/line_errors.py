"""What is wrong with an input line, said in plain words instead of the JSON decoder's.

The decoder says ``Expected `str` of length >= 1 - at `$.custom_id``` or ``JSON is malformed:
invalid character (byte 4)``; a batch's ``errors`` tell its owner what to fix in the line
(``custom_id must not be empty``), naming the field in ``param`` where one is at fault.
Anything not recognised is passed on as the decoder said it.
"""

from __future__ import annotations

import re

# JSON type names as the decoder says them, as a person would.
_KINDS = {
    "object": "a JSON object",
    "array": "an array",
    "str": "a string",
    "int": "a number",
    "float": "a number",
    "bool": "true or false",
    "null": "null",
}
_FIELDS = "custom_id, method, url and body"
_EMPTY = re.compile(r"Expected `str` of length >= 1 - at `\$\.(\w+)`")
_MISSING = re.compile(r"Object missing required field `(\w+)`")
_WRONG = re.compile(r"Expected `(\w+)`, got `(\w+)`(?: - at `\$\.(\w+)`)?")
_MALFORMED = re.compile(r"JSON is malformed: (.+) \(byte (\d+)\)")


def invalid_line(problem: str) -> tuple[str, str | None]:
    """A plain account of the decoder's ``problem`` with a line, and the field at fault."""
    if found := _EMPTY.fullmatch(problem):
        return f"{found[1]} must not be empty", found[1]
    if found := _MISSING.fullmatch(problem):
        return f"the line has no {found[1]} (every line needs {_FIELDS})", found[1]
    if found := _WRONG.fullmatch(problem):
        want, got, field = _KINDS.get(found[1], found[1]), _KINDS.get(found[2], found[2]), found[3]
        if field is None:
            return f"a line must be {want} with {_FIELDS}, not {got}", None
        return f"{field} must be {want}, not {got}", field
    if problem == "Input data was truncated":
        return (
            "the line is not valid JSON: it ends before its JSON does (an unclosed string, "
            "object or array, or not JSON at all)",
            None,
        )
    if found := _MALFORMED.fullmatch(problem):
        return f"the line is not valid JSON: {found[1]} at character {int(found[2]) + 1}", None
    return problem, None

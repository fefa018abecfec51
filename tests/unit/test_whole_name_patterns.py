"""Names checked by a pattern are checked whole: a final line break is no part of a name.

``$`` also matches before a final "\\n", and msgspec checks a pattern with ``re.search``; a
``.match`` with ``$`` is the same. A key id ``key_...\\n`` passed ``KEY_ID``, and the settings
took ``certs.organization``, ``openbao.mount`` and ``nats.internal_clients`` entries ending in
one (a subject DN, a Vault URL path and a NATS user name with a line break; a review).
"""

from __future__ import annotations

import pytest

from switchyard.admin.keys_cli import grace_seconds
from switchyard.config import load_settings
from switchyard.errors import ConfigError, InputError
from switchyard.schemas.keys import KEY_ID, new_key_id


def test_a_key_id_with_a_final_line_break_is_no_key_id() -> None:
    key_id = new_key_id()
    assert KEY_ID.match(key_id)
    assert KEY_ID.match(key_id + "\n") is None


@pytest.mark.parametrize(
    ("variable", "good", "bad"),
    [
        ("SWITCHYARD_CERTS__ORGANIZATION", "Switchyard", "Switchyard\n"),
        ("SWITCHYARD_OPENBAO__MOUNT", "switchyard", "switchyard\n"),
        ("SWITCHYARD_NATS__INTERNAL_CLIENTS", '["watcher"]', '["watcher\\n"]'),
    ],
)
def test_a_setting_name_ending_in_a_line_break_is_refused(
    variable: str, good: str, bad: str
) -> None:
    load_settings(env={variable: good})
    with pytest.raises(ConfigError):
        load_settings(env={variable: bad})


def test_a_duration_with_a_final_line_break_is_refused() -> None:
    assert grace_seconds("1h") == 3600
    with pytest.raises(InputError):
        grace_seconds("1h\n")

"""The Batch API's storage limits as settings: the files store's cap and a tenant's quota."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from switchyard.config import load_settings
from switchyard.errors import ConfigError
from switchyard.runtime import definitions
from switchyard.stack.natsconf import NatsServerLayout

GIB = 1024 * 1024 * 1024
_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def _size(text: str) -> int:
    """A nats-server size (``8G``) in bytes."""
    number, unit = re.fullmatch(r"(\d+)([KMGT]?)B?", text.upper()).groups()  # type: ignore[union-attr]
    return int(number) * _UNITS.get(unit, 1)


def test_the_files_store_is_capped_by_the_setting(tmp_path: Path) -> None:
    overrides = {"home": str(tmp_path), "batch": {"files_max_bytes": 300 * 1024 * 1024}}
    settings = load_settings(None, env={}, overrides=overrides)
    assert definitions.files_store_config(settings).max_bytes == 300 * 1024 * 1024


def test_by_default_the_files_store_leaves_most_of_the_jetstream_store_to_the_streams(
    tmp_path: Path,
) -> None:
    """The default cap, with USAGE's and HOLD's, stays well inside the JetStream store the
    local stack renders: a full JetStream store stops every stream."""
    settings = load_settings(None, env={}, overrides={"home": str(tmp_path)})
    cap = definitions.files_store_config(settings).max_bytes
    assert cap == 2 * GIB
    store = _size(NatsServerLayout.__dataclass_fields__["max_file_store"].default)  # type: ignore[arg-type]
    streams = settings.streams.usage_max_bytes + settings.streams.hold_max_bytes
    assert cap + streams <= 0.7 * store
    assert settings.batch.tenant_max_bytes < cap
    assert settings.batch.tenant_max_bytes >= 5 * settings.batch.max_file_bytes
    assert settings.batch.tenant_max_files == 10_000


def test_a_files_store_smaller_than_one_file_is_refused(tmp_path: Path) -> None:
    overrides = {
        "home": str(tmp_path),
        "batch": {"max_file_bytes": 200 * 1024 * 1024, "files_max_bytes": 100 * 1024 * 1024},
    }
    with pytest.raises(ConfigError) as info:
        load_settings(None, env={}, overrides=overrides)
    assert info.value.field == "batch.files_max_bytes"

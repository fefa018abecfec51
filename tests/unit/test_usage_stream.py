"""The USAGE stream's bounds: a week of events at a busy gateway must not fill JetStream."""

from __future__ import annotations

from pathlib import Path

from nats.js import api as js_api

from switchyard.config import load_settings
from switchyard.runtime.definitions import usage_stream_config
from switchyard.stack.natsconf import NatsServerLayout

# Measured: one usage batch of one event (a quiet gateway batches little) is ~625 bytes.
EVENT_BYTES = 625


def test_usage_is_bounded_in_bytes_well_inside_the_store(tmp_path: Path) -> None:
    settings = load_settings(None, env={"SWITCHYARD_HOME": str(tmp_path)})
    config = usage_stream_config(settings)
    assert config.max_bytes == settings.streams.usage_max_bytes
    assert config.discard == js_api.DiscardPolicy.OLD  # accounted events make room, not new ones
    store = NatsServerLayout.__dataclass_fields__["max_file_store"].default
    store_bytes = int(str(store).rstrip("G")) * 1024**3
    assert config.max_bytes is not None
    assert config.max_bytes <= store_bytes // 4
    # ...and still most of a day of events at 40 requests a second.
    assert config.max_bytes >= 40 * 20 * 3600 * EVENT_BYTES

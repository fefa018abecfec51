"""Which JetStream stores in a home belong to another node count (plain directories, no server)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from switchyard.config import Settings, load_settings
from switchyard.errors import StackError
from switchyard.stack.home import StackHome
from switchyard.stack.natsnodes import check_store_layout, other_stores

pytestmark = pytest.mark.unit


def _settings(home: Path, nodes: int) -> Settings:
    settings = load_settings(None, overrides={"home": str(home)})
    stack = msgspec.structs.replace(settings.stack, nats_nodes=nodes)
    return msgspec.structs.replace(settings, stack=stack)


def _store_with_data(store: Path) -> None:
    stream = store / "jetstream" / "CLIENT" / "streams" / "KV_sy_keys"
    stream.mkdir(parents=True)
    (stream / "meta.inf").write_text("{}")


def test_a_single_nodes_store_stops_a_cluster_and_says_how_to_go_on(tmp_path: Path) -> None:
    home = StackHome(tmp_path / "home")
    home.ensure()
    _store_with_data(home.nats_store)
    settings = _settings(home.root, 3)
    assert other_stores(settings, home) == [home.nats_store]
    with pytest.raises(StackError) as refused:
        check_store_layout(settings, home)
    message = str(refused.value)
    assert f"written by a single NATS node ({home.nats_store})" in message
    assert str(home.nats / "jetstream-3") in message  # where the cluster would look
    assert "set stack.nats_nodes back to 1" in message
    assert f"`rm -rf {home.nats_store}`" in message
    assert "Nothing was started" in message


def test_a_clusters_stores_stop_a_single_node(tmp_path: Path) -> None:
    home = StackHome(tmp_path / "home")
    home.ensure()
    for n in (1, 2, 3):
        _store_with_data(home.nats / f"jetstream-{n}")
    settings = _settings(home.root, 1)
    stale = [home.nats / f"jetstream-{n}" for n in (1, 2, 3)]
    assert other_stores(settings, home) == stale
    with pytest.raises(StackError) as refused:
        check_store_layout(settings, home)
    assert "written by a 3-node NATS cluster" in str(refused.value)
    assert "set stack.nats_nodes back to 3" in str(refused.value)
    assert f"`rm -rf {' '.join(map(str, stale))}`" in str(refused.value)


@pytest.mark.parametrize("nodes", [1, 3])
def test_a_home_with_only_its_own_store_or_empty_leftovers_starts(
    tmp_path: Path, nodes: int
) -> None:
    home = StackHome(tmp_path / "home")
    home.ensure()
    settings = _settings(home.root, nodes)
    check_store_layout(settings, home)  # a fresh home
    for store in (home.nats_store, *(home.nats / f"jetstream-{n}" for n in (1, 2, 3))):
        store.mkdir()  # directories without a file: nothing would be lost
    if nodes == 1:
        _store_with_data(home.nats_store)
    else:
        _store_with_data(home.nats / "jetstream-2")
    assert other_stores(settings, home) == []
    check_store_layout(settings, home)

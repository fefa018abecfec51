"""`up` after `stack.nats_nodes` changed on a home that holds data: refused before anything starts.

A single node and a 3-node cluster keep their JetStream data in different directories. Started
anyway, the new layout came up healthy on an empty store: the keys made before answered 401 and
`keys list` showed only a freshly minted demo key.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli_stack import CliStack, base_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_changed_node_count_is_refused_and_the_old_data_is_still_there(
    tmp_path: Path,
) -> None:
    stack = CliStack(tmp_path, tmp_path / "switchyard.yaml", base_config(tmp_path))
    stack.write_config(stack.doc)
    home = tmp_path / "home"
    up = stack.run("up", "--detach", timeout=240)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        created = stack.run("keys", "create", "kept", "--json", timeout=20)
        assert created.returncode == 0, created.stderr
        key_id = json.loads(created.stdout)["record"]["id"]
    finally:
        assert stack.run("down", timeout=120).returncode == 0
    demo_key = (home / "demo-key").read_text()
    stopped = (home / "run" / "state.json").read_text()

    cluster = {**stack.doc, "stack": {**stack.doc["stack"], "nats_nodes": 3}}  # type: ignore[dict-item]
    cluster["stack"]["nats_cluster_port"] = 0  # type: ignore[index]
    stack.write_config(cluster)
    refused = stack.run("up", "--detach", timeout=240)
    if refused.returncode == 0:  # it started after all: stop it before failing
        stack.run("down", timeout=120)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"written by a single NATS node ({home / 'nats' / 'jetstream'})" in refused.stderr
    assert "set stack.nats_nodes back to 1" in refused.stderr
    assert not list((home / "nats").glob("jetstream-*"))  # no node ran
    assert (home / "run" / "state.json").read_text() == stopped  # no supervisor either
    assert (home / "demo-key").read_text() == demo_key

    stack.write_config(stack.doc)
    again = stack.run("up", "--detach", timeout=240)
    try:
        assert again.returncode == 0, again.stdout + again.stderr
        listing = stack.run("keys", "list", "--json", timeout=20)
        assert key_id in {k["id"] for k in json.loads(listing.stdout)}
    finally:
        assert stack.run("down", timeout=120).returncode == 0

"""``ingress.<edge>.root_path``: the prefix a proxy serves an edge under. The edge's entry drops it
from a path that kept it, states it in the scope, and the URLs given back carry it."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from switchyard.config import load_settings
from switchyard.dialects.anthropic import batches as ab
from switchyard.errors import ConfigError
from switchyard.ingress.root_path import RootPath
from switchyard.runtime import forwarded
from switchyard.schemas import batches as b

pytestmark = pytest.mark.unit


class _Seen:
    """An edge app standing in for FastPath: keeps the scope it was given."""

    def __init__(self) -> None:
        self.edge = object()
        self.scope: dict[str, Any] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scope = dict(scope)


async def _through(prefix: str, path: str, headers: dict[str, str] | None = None) -> Request:
    seen = _Seen()
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "server": ("10.0.0.5", 8081),
        "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    await RootPath(seen, prefix)(scope, None, None)  # type: ignore[arg-type]
    return Request(seen.scope)


@pytest.mark.parametrize(
    ("path", "seen"),
    [
        ("/v1/models", "/v1/models"),  # stripped by the proxy
        ("/sy/v1/models", "/v1/models"),  # kept by the proxy
        ("/sy", "/"),
        ("/sy/", "/"),
        ("/sync/v1/models", "/sync/v1/models"),  # another path that starts the same
    ],
)
async def test_a_kept_prefix_is_dropped_and_the_scope_says_it(path: str, seen: str) -> None:
    request = await _through("/sy", path)
    assert request.scope["path"] == seen
    assert request.scope["raw_path"] == seen.encode()
    assert forwarded.root_path(request) == "/sy"
    assert request.scope["root_path"] == ""  # not ASGI's: Starlette would expect it in paths


async def test_a_batchs_results_url_carries_the_prefix() -> None:
    headers = {"host": "10.0.0.5:8081", "x-forwarded-host": "tools.example.com"}
    headers["x-forwarded-proto"] = "https"
    request = await _through("/llm/sy", "/v1/messages/batches/msgbatch_1", headers)
    base = forwarded.base_url(request)
    assert base == "https://tools.example.com/llm/sy"
    ended = b.Batch(
        id="msgbatch_1",
        endpoint=b.MESSAGES_ENDPOINT,
        input_file_id="file-in",
        completion_window="24h",
        status="completed",
        created_at=1,
        output_file_id="file-out",
    )
    url = ab.batch_object(ended, base)["results_url"]
    assert url == "https://tools.example.com/llm/sy/v1/messages/batches/msgbatch_1/results"


def test_without_a_prefix_nothing_changes() -> None:
    scope = {"type": "http", "path": "/v1/models", "headers": [], "query_string": b""}
    assert forwarded.root_path(Request(scope)) == ""


@pytest.mark.parametrize("good", ["", "/sy", "/llm/switchyard", "/a.b~c_d-e"])
def test_a_path_prefix_is_taken(good: str) -> None:
    gateway = {"port": 8081, "root_path": good}
    settings = load_settings(None, env={}, overrides={"ingress.gateway": gateway})
    assert settings.ingress.gateway.root_path == good
    assert settings.ingress.tail.root_path == ""  # each edge its own


@pytest.mark.parametrize(
    "bad", ["sy", "/sy/", "/", "//sy", "/sy?x=1", "/s y", "/../sy", "/sy/..", "https://x/sy"]
)
def test_what_is_no_path_prefix_is_refused_at_start(bad: str) -> None:
    for edge in ("tail", "gateway"):
        listen = {"port": 8081, "root_path": bad}
        with pytest.raises(ConfigError) as caught:
            load_settings(None, env={}, overrides={f"ingress.{edge}": listen})
        assert caught.value.field == f"ingress.{edge}.root_path"
        assert caught.value.hint

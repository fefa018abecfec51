"""The web app's live pages (switchyard/admin/ui/static/live.js) when the stream is refused,
run in Node with just enough of a page around it (no browser here). A 429 (too many live
pages open with the token) stopped live updates for good, with "Reload the page"; now the
page waits the answer's Retry-After and opens the stream again. Signed out stops them still.
Skipped without Node."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import switchyard

pytestmark = pytest.mark.unit

LIVE_JS = Path(switchyard.__file__).parent / "admin" / "ui" / "static" / "live.js"

# A page around live.js: an Overview root, EventSources that are refused at once (CLOSED,
# as a browser's is on an answer other than a stream), and a fetch answering ``STATUS``.
HARNESS = r"""
const fs = require("fs");
const vm = require("vm");
const [file, status, retryAfter] = process.argv.slice(1);
const opened = [];
const asked = [];
class EventSource {
  constructor(url) { this.url = url; this.readyState = 0; opened.push(this);
    setTimeout(() => { this.readyState = EventSource.CLOSED; this.onerror(); }, 10); }
  addEventListener() {}
  close() { this.readyState = EventSource.CLOSED; }
}
EventSource.CLOSED = 2;
const problemBox = { textContent: "", classList: { toggle() {} } };
const root = {
  dataset: { live: "overview", periodS: "1" },
  querySelector: (s) => (s === "[data-problem]" ? problemBox : null),
  querySelectorAll: () => [],
};
const page = {
  document: {
    hidden: false, body: { dataset: { root: "" } },
    querySelector: (s) => (s === "[data-live]" ? root : null),
    addEventListener() {},
  },
  EventSource, AbortController, setTimeout, clearTimeout, setInterval: () => 0,
  fetch: async (url, init) => {
    asked.push(url);
    return { ok: status === "200", status: Number(status),
             headers: { get: (h) => (h === "retry-after" ? retryAfter : "text/html") } };
  },
  Date, Number, Math, JSON, Map, Set, Object, Promise, console,
};
vm.runInNewContext(fs.readFileSync(file, "utf8"), page);
setTimeout(() => {
  const problem = problemBox.textContent;
  console.log(JSON.stringify({ opened: opened.length, asked: asked.length, problem }));
  process.exit(0);
}, 1500);
"""


def _run(status: int, retry_after: str) -> dict[str, object]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    done = subprocess.run(
        [node, "-e", HARNESS, "--", str(LIVE_JS), str(status), retry_after],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_refused_stream_is_opened_again_after_retry_after() -> None:
    got = _run(429, "1")
    # Opened, refused, asked why (429, Retry-After: 1), opened again a second later (and,
    # refused again here, waiting once more).
    assert got["opened"] == 2, got
    assert "Too many live pages" in str(got["problem"]), got


def test_a_signed_out_page_stops_its_live_updates() -> None:
    got = _run(401, "")
    assert got["opened"] == 1, got
    assert "Live updates stopped" in str(got["problem"]), got

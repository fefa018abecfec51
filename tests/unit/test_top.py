"""`switchyard top`: what a frame shows for an overview, and what each failure to read one says."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from switchyard.config import Settings, load_settings
from switchyard.errors import GatewayError, GatewayUnreachable
from switchyard.schemas.monitor import (
    CooldownState,
    DeploymentState,
    HeldQueue,
    Overview,
    ProcessState,
    QueueState,
    Rates,
)
from switchyard.schemas.secret import Secret
from switchyard.top import Target, fetch_overview, frame, resolve_target
from switchyard.top.app import PIPE_WIDTH, pipe_width
from switchyard.top.render import NO_PROCESSES, NO_ROUTES
from switchyard.top.source import OVERVIEW_PATH

pytestmark = pytest.mark.unit

TOKEN = "adm-not-to-be-printed-0123456789"
URL = "http://127.0.0.1:8081"


def _deployment(id: str, **fields: object) -> DeploymentState:
    provider, _, model = id.partition("--")
    defaults: dict[str, object] = {
        "provider": provider,
        "kind": "openai-compatible",
        "model": model,
        "aliases": [model],
        "weight": 1.0,
        "concurrency": 8,
        "queue": QueueState(concurrency=8, limit=1000),
    }
    return DeploymentState(id=id, **{**defaults, **fields})  # type: ignore[arg-type]


def _process(component: str, instance: str, **fields: object) -> ProcessState:
    defaults: dict[str, object] = {
        "host": "box",
        "pid": 100,
        "healthy": True,
        "ready": True,
        "cpu_percent": 1.5,
        "rss_bytes": 64 * 2**20,
        "uptime_s": 3723.0,
        "last_seen_s": 0.4,
    }
    return ProcessState(component=component, instance=instance, **{**defaults, **fields})  # type: ignore[arg-type]


def _overview(**fields: object) -> Overview:
    defaults: dict[str, object] = {
        "at": 1_800_000_000.0,
        "deployments": [
            _deployment("fake--idle"),
            _deployment(
                "fake--busy",
                rates=Rates(requests_per_s=42.5, p50_ms=3.4, p99_ms=17.1, ttft_p50_ms=2.2),
            ),
            _deployment(
                "fake--held",
                aliases=["held", "held-too"],
                concurrency=1,
                queue=QueueState(
                    waiting=19,
                    in_flight=1,
                    concurrency=1,
                    limit=20,
                    redelivered=2,
                    oldest_wait_s=7.25,
                ),
            ),
            _deployment(
                "openai--gpt-4o",
                rates=Rates(requests_per_s=0.5, error_ratio=0.4, p50_ms=950.0, p99_ms=2900.0),
                cooldown=CooldownState(until=0.0, seconds_left=11.6, status=429, reason="429"),
            ),
            _deployment("demo--demo", concurrency=256, queue=None),
        ],
        "processes": [
            _process("modelproxy", "modelproxy-1"),
            _process("accounting", "accounting", healthy=False, ready=False),
            _process("tail", "tail"),
            _process("head", "head-2", healthy=False, last_seen_s=14.2),
            _process("head", "head-1"),
        ],
        "totals": Rates(requests_per_s=43.0, error_ratio=0.005, p50_ms=3.4, tokens_per_s=512.0),
        "spend_today_usd": 1.5,
    }
    return Overview(**{**defaults, **fields})  # type: ignore[arg-type]


def _screen(overview: Overview | None, width: int = 200, **kwargs: object) -> list[str]:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(frame(overview, url=URL, **kwargs))  # type: ignore[arg-type]
    return [line.rstrip() for line in console.export_text().splitlines()]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.split("  ") if cell.strip()]  # 2+ spaces apart


def _row(lines: list[str], *first: str) -> list[str]:
    """The cells of the table row whose first cells are ``first``."""
    return next(c for c in map(_cells, lines) if c[: len(first)] == list(first))


def test_deployments_come_cooling_then_saturated_then_busiest_with_their_queue_and_rates() -> None:
    lines = _screen(_overview())
    order = [line.split()[0] for line in lines if line.split()[:1] and "--" in line.split()[0]]
    # Cooling down (it answers nothing), then serving at its concurrency with 19 waiting, then
    # by traffic; the idle ones by id.
    assert order == ["openai--gpt-4o", "fake--held", "fake--busy", "demo--demo", "fake--idle"]
    header = _row(lines, "DEPLOYMENT")
    assert header == [
        "DEPLOYMENT", "ALIASES", "QUEUED", "IN FLIGHT", "REQ/S", "P50/P99", "TTFT P50/P99",
        "ERRORS", "REDELIV", "OLDEST", "COOLDOWN",
    ]  # fmt: skip
    # 19 of a limit of 20 waiting: the share of the limit is shown next to the count.
    held = _row(lines, "fake--held")
    assert held == [
        "fake--held", "held, held-too", "19 100%", "1/1", "0", "-", "-", "0%", "2", "7.2s", "-"
    ]  # fmt: skip
    assert _row(lines, "fake--busy")[2:7] == ["0", "0/8", "42.5", "3.4ms/17ms", "2.2ms/-"]
    assert _row(lines, "openai--gpt-4o")[4:7] == ["0.5", "950ms/2.9s", "-"]
    assert _row(lines, "openai--gpt-4o")[-3:] == ["0", "-", "11s left (429)"]
    assert "40.0%" in _row(lines, "openai--gpt-4o")
    assert _row(lines, "demo--demo")[2:4] == ["?", "?/256"]  # the queue could not be read


def test_the_header_has_the_totals_and_the_processes_come_unhealthy_first_then_in_order() -> None:
    lines = _screen(_overview(), interval=1.0)
    assert lines[0] == f"switchyard top  {URL}  " + lines[0].split()[-3] + "   q quits"
    totals = lines[1]
    for shown in ("requests 43.0/s", "errors 0.5%", "latency p50/p99 3.4ms/-", "tokens 512/s"):
        assert shown in totals
    assert "spend today $1.50" in totals
    summary = lines[2]
    assert "deployments 5" in summary
    assert "queued 19" in summary
    assert "in flight 1" in summary
    assert "cooling down 1" in summary
    assert "processes 3/5 healthy" in summary
    instances = [
        line.split()[1]
        for line in lines
        if line.split()[:1] and line.split()[0] in {"tail", "head", "modelproxy", "accounting"}
    ]
    # Silent, then not ready, then the healthy ones in the order a request meets them.
    assert instances == ["head-2", "accounting", "tail", "head-1", "modelproxy-1"]
    assert _row(lines, "tail") == [
        "tail", "tail", "100", "healthy", "1.5%", "64 MiB", "1h02m", "0.4s ago"
    ]  # fmt: skip
    assert _row(lines, "head", "head-2")[3:] == ["silent", "1.5%", "64 MiB", "1h02m", "14s ago"]
    assert _row(lines, "accounting")[3] == "not ready"
    assert not any("HOST" in line for line in lines)  # one host: no column for it


def test_a_second_host_adds_the_host_column() -> None:
    processes = [_process("tail", "tail", host="edge-a"), _process("head", "head-1", host="core")]
    lines = _screen(_overview(processes=processes))
    assert "HOST" in _row(lines, "COMPONENT")
    assert "edge-a" in _row(lines, "tail")


def test_empty_states_say_what_is_missing() -> None:
    lines = _screen(_overview(deployments=[], processes=[]))
    assert NO_ROUTES in lines
    assert NO_PROCESSES in lines


def test_before_the_first_overview_it_says_what_it_is_reading() -> None:
    assert _screen(None, interval=1.0)[1:] == [f"reading {URL}/admin/v1/overview ..."]


def test_calls_stalled_in_flight_show_their_age_and_come_before_deployments_answering() -> None:
    """An explorer's streams stalled at their provider for 15 s showed only `3/8` in flight,
    listed by name below a deployment answering 9 requests a second: the oldest call's age
    follows the count, and the stalled deployment comes first."""
    stalled = _deployment(
        "zz--stalled",
        queue=QueueState(in_flight=3, concurrency=8, limit=1000, oldest_in_flight_s=15.4),
    )
    busy = _deployment(
        "aa--busy",
        queue=QueueState(in_flight=1, concurrency=8, limit=1000, oldest_in_flight_s=0.3),
        rates=Rates(requests_per_s=9.0),
    )
    lines = _screen(_overview(deployments=[busy, _deployment("aa--idle"), stalled]))
    order = [line.split()[0] for line in lines if line.split()[:1] and "--" in line.split()[0]]
    assert order == ["zz--stalled", "aa--busy", "aa--idle"]
    assert _row(lines, "zz--stalled")[2:4] == ["0", "3/8 15s"]
    assert _row(lines, "aa--busy")[2:4] == ["0", "1/8"]  # under a second: the count alone


def test_requests_held_for_fair_order_show_next_to_the_queue_and_count_as_queued() -> None:
    saturated = _deployment(
        "fake--fair",
        queue=QueueState(waiting=43, held=43, in_flight=8, concurrency=8, limit=1000),
        saturated=True,
        held=[
            HeldQueue(priority="batch", tenant="team-a", waiting=40),
            HeldQueue(priority="default", tenant="team-b", waiting=3),
        ],
    )
    lines = _screen(_overview(deployments=[_deployment("fake--idle"), saturated]))
    assert _row(lines, "fake--fair")[2:4] == ["43 (43 held)", "8/8"]
    order = [line.split()[0] for line in lines if line.split()[:1] and "--" in line.split()[0]]
    assert order == ["fake--fair", "fake--idle"]


def test_the_queues_share_of_its_limit_leaves_out_what_is_held_for_fair_order() -> None:
    """The limit (dispatch_queue_limit) counts what waits in dispatch and what is in flight;
    held requests wait in HOLD. Counted, a saturated deployment showed 215% in red while
    every request was answered."""
    saturated = _deployment(
        "fake--fair",
        queue=QueueState(waiting=43, held=40, in_flight=8, concurrency=8, limit=20),
        saturated=True,
    )
    lines = _screen(_overview(deployments=[saturated]))
    assert _row(lines, "fake--fair")[2] == "43 55% (40 held)"


def test_an_error_is_shown_above_the_last_overview_or_alone() -> None:
    alone = _screen(None, error="control service not answering: x", interval=1.0)
    assert alone[1:] == ["control service not answering: x", "trying again every 1s"]
    kept = _screen(_overview(), error="gateway not answering", interval=2.0)
    assert kept[1] == "gateway not answering"
    assert kept[2].startswith("trying again every 2s; below: the overview of ")
    assert any(line.startswith("fake--held") for line in kept)


def test_a_narrow_terminal_hides_the_least_useful_columns_and_says_which() -> None:
    lines = _screen(_overview(), width=80)
    assert all(len(line) <= 80 for line in lines)
    assert _row(lines, "DEPLOYMENT")[:3] == ["DEPLOYMENT", "QUEUED", "IN FLIGHT"]
    assert _row(lines, "fake--held")[:3] == ["fake--held", "19 100%", "1/1"]  # names stay whole
    assert "(too narrow for ALIASES, TTFT P50/P99, REDELIV, OLDEST: widen the terminal)" in lines


# ---- where it reads from, and what each failure says ----


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return load_settings(env={}, overrides={"home": str(tmp_path), **overrides})


def test_the_target_is_the_settings_gateway_and_token_unless_overridden(tmp_path: Path) -> None:
    (tmp_path / "admin-token").write_text(TOKEN + "\n")
    every_address = {"host": "0.0.0.0", "port": 9181}  # noqa: S104  (a listener, read to connect)
    settings = _settings(tmp_path, **{"ingress.gateway": every_address})
    target = resolve_target(settings, None, None)
    assert target.url == "http://127.0.0.1:9181"
    assert target.token.reveal() == TOKEN
    assert TOKEN not in repr(target)
    other = tmp_path / "remote-token"
    other.write_text("remote")
    remote = resolve_target(settings, "https://gw.example:8443/admin/v1/", other)
    assert (remote.url, remote.token.reveal()) == ("https://gw.example:8443", "remote")


def test_a_url_without_a_scheme_is_taken_as_http_and_another_scheme_is_refused(
    tmp_path: Path,
) -> None:
    """``--url 127.0.0.1:8381`` said "start the stack with `switchyard up`" (httpx had no
    scheme to connect with), about a gateway that was running."""
    (tmp_path / "admin-token").write_text(TOKEN)
    settings = _settings(tmp_path)
    bare = resolve_target(settings, "127.0.0.1:8381", None)
    assert bare.url == "http://127.0.0.1:8381"
    assert resolve_target(settings, "gw.example:8081/admin/v1", None).url == (
        "http://gw.example:8081"
    )
    with pytest.raises(GatewayError) as refused:
        resolve_target(settings, "ftp://gw.example", None)
    assert "not an http:// or https:// URL" in str(refused.value)


def test_frames_into_a_pipe_are_as_wide_as_columns_says(monkeypatch: pytest.MonkeyPatch) -> None:
    """``top > log`` always drew 160 columns, so REDELIV and TTFT never showed."""
    monkeypatch.delenv("COLUMNS", raising=False)
    unset = pipe_width()
    if not sys.__stdout__ or not sys.__stdout__.isatty():  # a pipe has no size of its own
        assert unset == PIPE_WIDTH
    monkeypatch.setenv("COLUMNS", "250")
    assert pipe_width() == 250
    for bad in ("wide", "0"):
        monkeypatch.setenv("COLUMNS", bad)
        assert pipe_width() == unset


def test_a_missing_token_file_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(GatewayError) as caught:
        resolve_target(_settings(tmp_path), None, None)
    assert str(tmp_path / "admin-token") in str(caught.value)
    assert "switchyard up" in str(caught.value)
    assert "--token-file" in str(caught.value)


async def _fetch(handler: object) -> GatewayError:
    target = Target(url=URL, token=Secret(TOKEN), token_file=Path("/etc/sy/admin-token"))
    transport = httpx.MockTransport(handler)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, timeout=5) as http:
        with pytest.raises(GatewayError) as caught:
            await fetch_overview(http, target)
    assert TOKEN not in str(caught.value)
    return caught.value


def _answer(status: int, message: str = "", code: str | None = None) -> object:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == OVERVIEW_PATH
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        return httpx.Response(status, json={"error": {"message": message, "code": code}})

    return handler


async def test_each_refusal_says_what_to_do() -> None:
    refused = await _fetch(_answer(401, "invalid admin token", "invalid_admin_token"))
    assert refused.status == 401
    assert str(refused) == (
        f"the gateway at {URL} refused the admin token from /etc/sy/admin-token; "
        "pass --token-file with this gateway's admin token"
    )
    down = await _fetch(_answer(503, "the control service is not running", "control_down"))
    assert str(down).startswith(
        "control service not answering: the control service is not running; check `switchyard"
    )
    tail = await _fetch(_answer(404, "not found"))
    assert "point --url at the gateway" in str(tail)
    odd = await _fetch(lambda request: httpx.Response(200, json={"hello": 1}))
    assert "not an overview" in str(odd)


async def test_no_answer_says_so_in_a_few_words() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connect failed") from ConnectionRefusedError(111, "refused")

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    def no_connection(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out")

    gone = await _fetch(refused)
    assert str(gone).startswith(
        f"gateway not answering at {URL} (connection refused); start the stack"
    )
    hung = await _fetch(slow)
    assert "the gateway or the control service behind it" in str(hung)
    silent = await _fetch(no_connection)
    assert str(silent).startswith(f"gateway not answering at {URL} (no connection within 5s)")
    # Nothing at the address is "no stack answering" (exit 3); a gateway that took the
    # connection and then hung is a failure (exit 1).
    assert isinstance(gone, GatewayUnreachable)
    assert isinstance(silent, GatewayUnreachable)
    assert not isinstance(hung, GatewayUnreachable)


def test_cli_refuses_json_without_once_and_reports_no_gateway_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "admin-token").write_text(TOKEN)
    run = [sys.executable, "-m", "switchyard", "--home", str(tmp_path), "top"]
    both = subprocess.run([*run, "--json"], capture_output=True, text=True, check=False)
    assert both.returncode == 2
    assert "use it with --once" in both.stderr
    gone = subprocess.run(
        [*run, "--once", "--json", "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert gone.returncode == 3  # no stack answering, as every other command says it
    assert gone.stdout == ""
    assert gone.stderr.count("\n") == 1
    assert gone.stderr.startswith("error: gateway not answering at http://127.0.0.1:9")
    assert TOKEN not in gone.stderr


def test_top_once_in_a_home_without_a_stack_is_no_stack_and_a_missing_token_file_a_failure(
    tmp_path: Path,
) -> None:
    """No stack was ever started in the home (no admin token there): 3, as ``keys`` and
    ``status`` say it. A ``--token-file`` that is not there is the command failing: 1."""
    run = [sys.executable, "-m", "switchyard", "--home", str(tmp_path), "top", "--once"]
    fresh = subprocess.run(run, capture_output=True, text=True, check=False, timeout=60)
    assert fresh.returncode == 3, fresh.stderr
    assert "cannot read the admin token file" in fresh.stderr
    named = tmp_path / "elsewhere-token"
    wrong = subprocess.run(
        [*run, "--token-file", str(named)], capture_output=True, text=True, check=False, timeout=60
    )
    assert wrong.returncode == 1, wrong.stderr
    assert str(named) in wrong.stderr


def _top_into_a_pipe(
    home: Path, *, interval: float, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """``switchyard top`` with its output into a pipe, against a gateway that is not there."""
    (home / "admin-token").write_text(TOKEN)
    run = [sys.executable, "-m", "switchyard", "--home", str(home), "top"]
    return subprocess.Popen(
        [*run, "--interval", str(interval), "--url", "http://127.0.0.1:9"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_top_into_a_pipe_prints_a_frame_each_interval(tmp_path: Path) -> None:
    """A full-screen view into a pipe printed nothing at all, and ran until killed."""
    with _top_into_a_pipe(tmp_path, interval=0.2) as proc:
        frames = 0
        assert proc.stdout is not None
        for line in proc.stdout:
            frames += "gateway not answering at http://127.0.0.1:9" in line
            if frames == 3:
                break
        proc.send_signal(signal.SIGINT)  # Ctrl-C ends it quietly
        _, err = proc.communicate(timeout=30)
    assert frames == 3
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert TOKEN not in err


def test_top_into_a_pipe_draws_as_wide_as_columns_says(tmp_path: Path) -> None:
    with _top_into_a_pipe(tmp_path, interval=0.2, env={**os.environ, "COLUMNS": "50"}) as proc:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(6)]
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert "gateway not answering" in "".join(lines)  # the error, wrapped to fit
    assert max(len(line.rstrip("\n")) for line in lines) <= 50


def test_top_into_a_pipe_whose_reader_leaves_exits_as_a_pipe_writer_does(tmp_path: Path) -> None:
    """``switchyard top | head -3``: rich ended the process with status 1, a failure under
    ``set -o pipefail``; a writer whose reader left exits 141 (SIGPIPE), quietly."""
    with _top_into_a_pipe(tmp_path, interval=0.1) as proc:
        assert proc.stdout is not None
        proc.stdout.readline()
        proc.stdout.close()  # the reader leaves
        err = proc.stderr.read() if proc.stderr is not None else ""
        proc.wait(timeout=30)
    assert proc.returncode == 141, err
    assert "Traceback" not in err


def test_a_deployment_without_its_provider_key_says_so_where_a_cooldown_would() -> None:
    lines = _screen(
        _overview(
            deployments=[
                _deployment("claude--sonnet", key_missing=True),
                _deployment("demo--demo"),
            ]
        )
    )
    assert _row(lines, "claude--sonnet")[-1] == "no key"
    assert _row(lines, "demo--demo")[-1] == "-"


def test_spend_today_is_plain_dollars_exact_to_the_nano_dollar() -> None:
    """It showed ``$1,234.5679`` (a thousands comma, four places) where the CLI and the 429
    messages print the same amount as ``$1234.567891``."""
    for spend, shown in ((1.5, "spend today $1.50 "), (1234.567891, "spend today $1234.567891")):
        totals = _screen(_overview(spend_today_usd=spend), interval=1.0)[1]
        assert shown in totals + " ", totals


async def test_a_tls_handshake_that_fails_is_a_gateway_there_not_none() -> None:
    """httpx raises ConnectError for a refused connection and for a TLS handshake that failed
    alike: the second (an https URL at a plain HTTP port, a certificate not trusted) was exit 3
    "start the stack", where something answers at the address (exit 1)."""

    async def plain_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(plain_http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    target = Target(url=f"https://127.0.0.1:{port}", token=Secret(TOKEN), token_file=Path("/t"))
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            with pytest.raises(GatewayError) as caught:
                await fetch_overview(http, target)
    finally:
        server.close()
        await server.wait_closed()
    assert not isinstance(caught.value, GatewayUnreachable), caught.value

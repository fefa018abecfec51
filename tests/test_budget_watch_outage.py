"""The gateway's budget watch through a Valkey outage, on a real valkey-server and a plain
nats-server holding the ``sy_key_spent`` bucket: while spend cannot be read the watch keeps
its last counts and marks, and ``switchyard_budget_watch_last_scan_timestamp_seconds`` stops
moving (what the alert SwitchyardBudgetWatchStalled reads); it moves again once Valkey is
back. The outage is logged as a warning once (the marks then lapse: fail open), not at each
scan, and its end is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from switchyard.admin.budget_watch import BudgetWatch
from switchyard.admin.spend import SpendReader
from switchyard.bus import subjects
from switchyard.limits import keys as rk
from switchyard.limits import periods
from switchyard.limits.store import connect_redis
from switchyard.runtime import semconv as sc
from switchyard.runtime.metrics import Metrics
from switchyard.schemas.keys import KEY_ENCODER, RECORD_PREFIX, ClientKey, new_key_id
from switchyard.stack import valkey
from tests.support import jetstream_server, until, valkey_server, write_settings

pytestmark = pytest.mark.integration

INTERVAL_S = 30.0


def _watch_gauges(metrics: Metrics) -> dict[str, float]:
    return {
        s.name: s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
        if s.name.startswith("switchyard_budget_watch")
    }


async def test_the_last_scan_stops_moving_while_valkey_is_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="switchyard.admin.budget")
    settings, _ = write_settings(tmp_path / "home")
    # The roles' passwords, as the first start writes them: the reader logs in with them.
    valkey.write_config(
        valkey.ValkeyLayout(dir=settings.redis_password_dir, port=settings.stack.valkey_port)
    )
    key = ClientKey(
        id=new_key_id(), hash="ab" * 32, name="outage", budget_usd=1.0, budget_period="daily"
    )
    async with jetstream_server(tmp_path / "js") as (nc, _):
        js = nc.jetstream(timeout=2)
        await js.create_key_value(bucket=subjects.KEY_SPENT_BUCKET)
        reader = SpendReader(settings)
        metrics = Metrics("gateway")
        started = time.time()
        watch = BudgetWatch(nc, reader, metrics, interval=INTERVAL_S)
        watch._on_entry(f"{RECORD_PREFIX}{key.hash}", KEY_ENCODER.encode(key), 1)
        try:
            assert _watch_gauges(metrics) == {
                sc.BUDGET_WATCH_LAST_SCAN: watch.last_scan,
                sc.BUDGET_WATCH_INTERVAL: INTERVAL_S,
                sc.BUDGET_WATCH_COMPLETED_SCANS: 0.0,  # none yet: what a crash loop shows
            }
            assert started <= watch.last_scan <= time.time()  # not 0: not stalled since 1970
            async with valkey_server(settings):
                ops = connect_redis(settings, "ops")
                period_id = periods.current(key.budget_period, time.time())[0]
                await ops.set(rk.budget(key.id, period_id), 2 * rk.NANO)  # spent twice over
                await ops.aclose()
                before = time.time()
                await watch._scan_logged()
                assert before <= watch.last_scan <= time.time()
                assert list(watch.marks.written) == [key.id]
                assert _watch_gauges(metrics)[sc.BUDGET_WATCH_COMPLETED_SCANS] == 1
            scanned = watch.last_scan

            # Valkey is gone: the scans fail, the counts, the mark and the time stay.
            caplog.clear()
            for _ in range(3):
                await watch._scan_logged()
            warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(warned) == 1, warned  # once for the outage, not once per scan
            assert "could not read spend (ConnectionError)" in warned[0]
            assert "served again (fail open) from about 20 to 30 minutes" in warned[0]
            assert watch.last_scan == scanned
            assert _watch_gauges(metrics)[sc.BUDGET_WATCH_LAST_SCAN] == scanned
            assert (
                _watch_gauges(metrics)[sc.BUDGET_WATCH_COMPLETED_SCANS] == 1
            )  # failed: not counted
            assert (watch.with_budget, watch.near[1.0]) == (1, 1)
            assert list(watch.marks.written) == [key.id]

            async with valkey_server(settings):  # back, with its data
                caplog.clear()
                await watch._scan_logged()
                assert watch.last_scan > scanned
                assert list(watch.marks.written) == [key.id]
                assert [r.getMessage() for r in caplog.records][-1].startswith(
                    "spend is read again after"
                )
            caplog.clear()
            await watch._scan_logged()  # a new outage: warned again
            assert sum(r.levelno >= logging.WARNING for r in caplog.records) == 1
        finally:
            await watch.stop()
            await reader.close()


async def test_a_scan_that_fails_unforeseen_does_not_end_the_scans(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A scan that raised what the scan loop did not foresee (it was a spend counter that is
    not an integer, now skipped: below) stopped the watch for the life of the process (its
    task logged once, not restarted). Now it is logged (once per kind of error) and the next
    scan runs; the recovery is logged at info. The failure is
    injected into the scan itself (an error nothing real produces on demand); Valkey and NATS
    are real."""
    caplog.set_level(logging.INFO, logger="switchyard.admin.budget")
    settings, _ = write_settings(tmp_path / "home")
    valkey.write_config(
        valkey.ValkeyLayout(dir=settings.redis_password_dir, port=settings.stack.valkey_port)
    )
    key = ClientKey(
        id=new_key_id(), hash="cd" * 32, name="k", budget_usd=1.0, budget_period="daily"
    )
    async with jetstream_server(tmp_path / "js") as (nc, _):
        await nc.jetstream(timeout=2).create_key_value(bucket=subjects.KEY_SPENT_BUCKET)
        reader = SpendReader(settings)
        watch = BudgetWatch(nc, reader, Metrics("gateway"), interval=0.1)
        watch._on_entry(f"{RECORD_PREFIX}{key.hash}", KEY_ENCODER.encode(key), 1)
        broken: type[Exception] | None = RuntimeError
        real_scan = watch.scan

        async def scan(now: float | None = None) -> bool:
            if broken is not None:
                raise broken("unforeseen")
            return await real_scan(now)

        watch.scan = scan  # type: ignore[method-assign]
        done = 0  # scans ended (each failing while broken)
        real_logged = watch._scan_logged

        async def counted() -> bool:
            nonlocal done
            try:
                return await real_logged()
            finally:
                done += 1

        watch._scan_logged = counted  # type: ignore[method-assign]

        def failed() -> list[logging.LogRecord]:
            return [
                r
                for r in caplog.records
                if r.name == "switchyard.admin.budget" and r.levelno >= logging.ERROR
            ]

        async with valkey_server(settings):
            ops = connect_redis(settings, "ops")
            counter = rk.budget(key.id, periods.current(key.budget_period, time.time())[0])
            await ops.set(counter, 2 * rk.NANO)
            scans = asyncio.create_task(watch._scan_forever())
            try:
                await until(failed)
                seen = done
                await until(lambda: done >= seen + 2)  # two more scans, each failing
                assert not scans.done(), scans.exception()
                assert len(failed()) == 1  # logged once, not at every scan
                assert "a budget scan failed" in failed()[0].getMessage()
                # Another kind of failure is logged too (one throttle for all hid it).
                broken = KeyError
                await until(lambda: len(failed()) == 2)
                assert "KeyError" in (failed()[1].exc_text or caplog.text)
                before = watch.last_scan

                broken = None  # repaired: the next scan marks the key, and says so
                await until(lambda: watch.last_scan > before)
                assert list(watch.marks.written) == [key.id]
                await until(lambda: "budget scans run again after failing" in caplog.text)
            finally:
                scans.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await scans
                await watch.stop()
                await reader.close()
                await ops.aclose()


async def test_a_spend_counter_that_is_not_an_integer_skips_its_key_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One counter an operator set to 1.5 made int() raise for the whole scan: no key was
    counted or marked, and the last scan stopped moving. Now that key is skipped (warned of
    once, by id; its mark left as it is) and the others are scanned."""
    caplog.set_level(logging.INFO, logger="switchyard.admin.budget")
    settings, _ = write_settings(tmp_path / "home")
    valkey.write_config(
        valkey.ValkeyLayout(dir=settings.redis_password_dir, port=settings.stack.valkey_port)
    )
    garbled, fine = (
        ClientKey(id=new_key_id(), hash=h * 32, name=h, budget_usd=1.0, budget_period="daily")
        for h in ("a1", "b2")
    )
    async with jetstream_server(tmp_path / "js") as (nc, _):
        await nc.jetstream(timeout=2).create_key_value(bucket=subjects.KEY_SPENT_BUCKET)
        reader = SpendReader(settings)
        watch = BudgetWatch(nc, reader, Metrics("gateway"), interval=INTERVAL_S)
        for key in (garbled, fine):
            watch._on_entry(f"{RECORD_PREFIX}{key.hash}", KEY_ENCODER.encode(key), 1)
        async with valkey_server(settings):
            ops = connect_redis(settings, "ops")
            period_id = periods.current("daily", time.time())[0]
            try:
                for key in (garbled, fine):
                    await ops.set(rk.budget(key.id, period_id), 2 * rk.NANO)
                await watch._scan_logged()
                assert sorted(watch.marks.written) == sorted([garbled.id, fine.id])

                await ops.set(rk.budget(garbled.id, period_id), "1.5")
                caplog.clear()
                before = watch.last_scan
                for _ in range(2):
                    assert await watch._scan_logged()
                assert watch.last_scan > before
                assert (watch.with_budget, watch.near[1.0]) == (1, 1)
                assert sorted(watch.marks.written) == sorted([garbled.id, fine.id])
                warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
                assert len(warned) == 1, warned  # once, not at every scan
                assert garbled.id in warned[0]
                assert "not an integer" in warned[0]
                assert garbled.hash not in warned[0]

                await ops.set(rk.budget(garbled.id, period_id), 0)  # repaired, not spent
                assert await watch._scan_logged()
                assert list(watch.marks.written) == [fine.id]
            finally:
                await watch.stop()
                await reader.close()
                await ops.aclose()


@pytest.mark.parametrize(("interval", "window"), [(500.0, "22 to 30"), (1200.0, "10 to 30")])
async def test_the_outage_warning_gives_the_fail_open_window_of_the_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, interval: float, window: str
) -> None:
    """A mark is rewritten at the last scan within 10 minutes (every scan past 600 s), so the
    marks lapse from 30 minutes less that period into the outage: 21.7 minutes at 500 s,
    10 at 1,200 s (the warning said 20 to 30 whatever the interval)."""
    settings, _ = write_settings(tmp_path / "home")  # no valkey-server runs: the read fails
    key = ClientKey(id=new_key_id(), hash="ef" * 32, name="k", budget_usd=1.0)
    async with jetstream_server(tmp_path / "js") as (nc, _):
        reader = SpendReader(settings)
        watch = BudgetWatch(nc, reader, Metrics("gateway"), interval=interval)
        watch._on_entry(f"{RECORD_PREFIX}{key.hash}", KEY_ENCODER.encode(key), 1)
        try:
            with caplog.at_level(logging.WARNING, logger="switchyard.admin.budget"):
                await watch._scan_logged()
            assert f"served again (fail open) from about {window} minutes" in caplog.text
        finally:
            await watch.stop()
            await reader.close()


async def test_a_gateway_started_while_valkey_is_down_is_stalled_since_its_start(
    tmp_path: Path,
) -> None:
    """The last-scan gauge starts at the watch's start: a gateway that never scanned exported
    0, and SwitchyardBudgetWatchStalled said it had been stalled for 20,000 days."""
    settings, _ = write_settings(tmp_path / "home")  # no valkey-server runs
    async with jetstream_server(tmp_path / "js") as (nc, _):
        reader = SpendReader(settings)
        metrics = Metrics("gateway")
        started = time.time()
        watch = BudgetWatch(nc, reader, metrics, interval=INTERVAL_S)
        key = ClientKey(id=new_key_id(), hash="12" * 32, name="k", budget_usd=1.0)
        watch._on_entry(f"{RECORD_PREFIX}{key.hash}", KEY_ENCODER.encode(key), 1)
        try:
            await watch._scan_logged()  # fails: Valkey is down
            assert watch.with_budget == 0  # (the scan did not complete)
            exported = _watch_gauges(metrics)[sc.BUDGET_WATCH_LAST_SCAN]
            assert started <= exported <= started + 5
        finally:
            await watch.stop()
            await reader.close()


async def test_a_failed_scan_is_retried_before_the_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan that raised (Valkey down) or whose mark writes failed (no bucket) waited the
    whole interval (up to 20 minutes) for the next: now at most RETRY_S (here 0.2 s)."""
    monkeypatch.setattr("switchyard.admin.budget_watch.RETRY_S", 0.2, raising=False)
    settings, _ = write_settings(tmp_path / "home")
    valkey.write_config(
        valkey.ValkeyLayout(dir=settings.redis_password_dir, port=settings.stack.valkey_port)
    )
    key = ClientKey(id=new_key_id(), hash="34" * 32, name="k", budget_usd=1.0)
    async with jetstream_server(tmp_path / "js") as (nc, _):  # no spent-marks bucket
        reader = SpendReader(settings)
        watch = BudgetWatch(nc, reader, Metrics("gateway"), interval=1200.0)
        watch._on_entry(f"{RECORD_PREFIX}{key.hash}", KEY_ENCODER.encode(key), 1)
        scans = 0
        real = watch._scan_logged

        async def counted() -> bool:
            nonlocal scans
            scans += 1
            return await real()

        watch._scan_logged = counted  # type: ignore[method-assign]
        loop = asyncio.create_task(watch._scan_forever())
        try:
            await until(lambda: scans >= 3, timeout=10)  # Valkey down: the read raises
            assert watch.with_budget == 0
            async with valkey_server(settings):
                ops = connect_redis(settings, "ops")
                period_id = periods.current(key.budget_period, time.time())[0]
                await ops.set(rk.budget(key.id, period_id), 2 * rk.NANO)
                await ops.aclose()
                await until(lambda: watch.with_budget == 1)  # read: the mark's write fails
                seen = scans
                await until(lambda: scans >= seen + 2, timeout=10)
                assert watch.marks.written == {}
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
            await watch.stop()
            await reader.close()

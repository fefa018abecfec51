"""The ``switchyard top`` command: one snapshot, or a live full-screen view until ``q``.

The live view reads an overview every ``interval`` seconds and redraws the whole frame with
rich's ``Live`` on the terminal's alternate screen, so quitting (``q``, or Ctrl-C) leaves the
shell as it was. Keys are read without blocking (cbreak mode, a reader on stdin's descriptor),
so ``q`` quits at once even while a read of the gateway is still waiting for its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import termios
import tty
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TextIO

import httpx
import msgspec
from rich.console import Console
from rich.live import Live

from switchyard.config import Settings
from switchyard.errors import GatewayError
from switchyard.schemas.monitor import Overview
from switchyard.top.render import frame
from switchyard.top.source import Target, fetch_overview, resolve_target

REQUEST_TIMEOUT_S = 5.0
PIPE_WIDTH = 160  # into a file or a pipe with no COLUMNS: wide enough for every column
QUIT_KEYS = b"qQ"


def run_top(
    target: Target,
    *,
    once: bool,
    as_json: bool,
    interval: float,
    out: TextIO,
) -> int:
    """Run ``switchyard top`` against ``target``; returns the exit status.

    Raises:
        GatewayError: ``--once`` only: no answer, or the token was refused (the live view
            shows such errors on screen and keeps trying).
    """
    # httpx logs every request at INFO; on a full-screen view that would be one line a second.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if once:
        overview, raw = asyncio.run(_read_once(target))
        if as_json:
            out.write(msgspec.json.format(raw, indent=2).decode() + "\n")
        else:
            console = Console(file=out)
            if not console.is_terminal:  # a file or a pipe has no width of its own
                console.width = pipe_width()
            console.print(frame(overview, url=target.url))
        return 0
    console = Console(file=out)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how many people leave top
        if console.is_terminal:
            asyncio.run(_live(target, interval, console))
        else:  # a pipe or a file: a full-screen view would show nothing; print each frame
            piped = _PipeConsole(file=out, width=pipe_width())
            asyncio.run(_frames(target, interval, piped))
    return 0


def pipe_width() -> int:
    """The width of frames written to a file or a pipe: ``COLUMNS`` when it is set to a
    number (``COLUMNS=250 switchyard top > log`` shows every column), else :data:`PIPE_WIDTH`
    (the standard library's terminal size, which reads ``COLUMNS`` first; a pipe has no size
    of its own)."""
    return shutil.get_terminal_size((PIPE_WIDTH, 24)).columns


class _PipeConsole(Console):
    """Rich ends the process with status 1 when its reader leaves (``| head``); the CLI's own
    handling gives 141 (killed by SIGPIPE), what a shell expects from a pipe's writer."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError


async def _frames(target: Target, interval: float, console: Console) -> None:
    """One frame per ``interval``, one after another (like ``top -b``), until interrupted."""

    def show(last: Overview | None, error: str | None) -> None:
        console.print(frame(last, url=target.url, error=error, interval=interval, keys=False))
        console.print()
        console.file.flush()

    await _until_quit(_every(target, interval, show), asyncio.Event())


async def _until_quit(work: Coroutine[Any, Any, None], quit_pressed: asyncio.Event) -> None:
    """Run ``work`` until ``quit_pressed`` is set: by a key, or by SIGINT or SIGTERM, whose
    handlers are set here (a shell's background job inherits SIGINT ignored, and SIGTERM
    would otherwise end the process with the terminal still on the alternate screen)."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, quit_pressed.set)
    working = asyncio.ensure_future(work)
    quitting = asyncio.ensure_future(quit_pressed.wait())
    try:
        done, _ = await asyncio.wait({working, quitting}, return_when=asyncio.FIRST_COMPLETED)
        if working in done:
            working.result()  # its failure as it is (a broken pipe: exit 141)
    finally:
        for task in (working, quitting):
            task.cancel()
        await asyncio.gather(working, quitting, return_exceptions=True)
        for sig in signals:
            loop.remove_signal_handler(sig)


async def _every(
    target: Target, interval: float, show: Callable[[Overview | None, str | None], None]
) -> None:
    """Read the overview every ``interval`` and ``show`` the last one read with the latest
    read's error, if it failed."""
    loop = asyncio.get_running_loop()
    last: Overview | None = None
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as http:
        while True:
            started = loop.time()
            error = None
            try:
                last, _ = await fetch_overview(http, target)
            except GatewayError as exc:
                error = str(exc)
            show(last, error)
            await asyncio.sleep(max(0.0, started + interval - loop.time()))


def read_overview(settings: Settings) -> Overview:
    """One overview from the settings' gateway (for ``switchyard status``).

    Raises:
        GatewayError: no gateway answered, or it refused (the text says which).
    """
    return asyncio.run(_read_once(resolve_target(settings, None, None)))[0]


async def _read_once(target: Target) -> tuple[Overview, bytes]:
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S) as http:
        return await fetch_overview(http, target)


async def _live(target: Target, interval: float, console: Console) -> None:
    quit_pressed = asyncio.Event()
    with (
        _keys(quit_pressed.set),
        Live(
            frame(None, url=target.url, interval=interval),
            console=console,
            screen=True,
            auto_refresh=False,
        ) as live,
    ):
        await _until_quit(_refresh_forever(live, target, interval), quit_pressed)


async def _refresh_forever(live: Live, target: Target, interval: float) -> None:
    def show(last: Overview | None, error: str | None) -> None:
        # The terminal's height now: a resized terminal gets a frame of its new size.
        height = live.console.size.height
        live.update(
            frame(last, url=target.url, error=error, interval=interval, height=height),
            refresh=True,
        )

    await _every(target, interval, show)


@contextlib.contextmanager
def _keys(on_quit: Callable[[], None]) -> Iterator[None]:
    """Call ``on_quit`` when ``q`` is typed; a no-op when stdin is not a terminal."""
    if not sys.stdin.isatty():
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    loop = asyncio.get_running_loop()

    def readable() -> None:
        data = os.read(fd, 64)
        if not data:  # stdin closed: stop watching it
            loop.remove_reader(fd)
        elif any(key in QUIT_KEYS for key in data):
            on_quit()

    tty.setcbreak(fd)  # keys arrive one by one, unechoed; Ctrl-C still interrupts
    loop.add_reader(fd, readable)
    try:
        yield
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)

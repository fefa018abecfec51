"""CLI commands without a stack: one line saying what was tried and what to do, at once, and
exit code 3 (every failure exited 1: a script could not tell "no stack" from "not found").

nats-py retries a failed first connection forever unless told otherwise; the commands used to
hang there, logging a warning twice a second. No servers run in these tests: the home has
certificates (as after a `switchyard up`) and the configured NATS port has no listener.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.support import free_port

pytestmark = pytest.mark.unit

# Seconds, Python start-up included: the bug was "never"; a loaded 2-core CI box running two
# test processes needs slack (10 s was once 10.2 s there).
BUDGET_S = 20.0


def _run(config: Path, *argv: str, stdin: str = "") -> tuple[int, list[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "switchyard", *argv, "--config", str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    took = time.monotonic() - began
    return proc.returncode, [line for line in proc.stderr.splitlines() if line.strip()], took


@pytest.fixture(scope="module")
def stopped_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A home with certificates and a config whose NATS port nothing listens on."""
    root = tmp_path_factory.mktemp("stopped")
    port = free_port()
    config = root / "switchyard.yaml"
    config.write_text(
        yaml.safe_dump({"home": str(root / "home"), "stack": {"nats_port": port}}),
        encoding="utf-8",
    )
    code, err, _ = _run(config, "certs", "init")
    assert code == 0, err
    return config, port


@pytest.mark.parametrize(
    ("argv", "stdin"),
    [
        (("keys", "create", "x"), ""),
        (("keys", "list"), ""),
        (("secrets", "put", "foo", "--from-stdin"), "value\n"),
        (("secrets", "list"), ""),
        (("provision",), ""),
        (("keys", "revoke", "key_0123456789abcdef"), ""),
        (("routes", "sync", "--apply"), ""),
        (("routes", "sync", "--exit-code"), ""),  # not its drift code (4): no check ran
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else None,
)
def test_command_without_a_stack_fails_fast_with_one_line(
    stopped_home: tuple[Path, int], argv: tuple[str, ...], stdin: str
) -> None:
    config, port = stopped_home
    code, err, took = _run(config, *argv, stdin=stdin)
    assert code == 3, err
    assert took < BUDGET_S, f"took {took:.1f}s: {err}"
    assert len(err) == 1, err
    assert err[0].startswith(f"error: no Switchyard stack answering at tls://127.0.0.1:{port} ")
    assert "start it with `switchyard up`, or pass --config/--home" in err[0]


def test_import_apply_without_a_stack_fails_fast(
    stopped_home: tuple[Path, int], tmp_path: Path
) -> None:
    config, _ = stopped_home
    litellm = tmp_path / "litellm.yaml"
    litellm.write_text(
        yaml.safe_dump(
            {"model_list": [{"model_name": "m", "litellm_params": {"model": "gpt-4o"}}]}
        ),
        encoding="utf-8",
    )
    code, err, took = _run(config, "import", "litellm-config", str(litellm), "--apply")
    assert code == 3
    assert took < BUDGET_S
    assert len(err) == 1, err
    assert err[0].startswith("error: no Switchyard stack answering")


def test_a_home_without_a_stack_says_so(tmp_path: Path) -> None:
    """Never started here: no certificates. Not "run certs init" (a new CA would not match a
    stack started elsewhere), but where it looked and how to point elsewhere."""
    config = tmp_path / "switchyard.yaml"
    config.write_text(yaml.safe_dump({"home": str(tmp_path / "home")}), encoding="utf-8")
    code, err, _ = _run(config, "keys", "list")
    assert code == 3
    assert len(err) == 1, err
    assert "no stack was ever started in this home" in err[0]
    assert str(tmp_path / "home") in err[0]


def test_output_cut_short_by_the_reader_is_not_a_traceback(tmp_path: Path) -> None:
    """`switchyard status | head -3` ended in a BrokenPipeError traceback."""
    config = tmp_path / "switchyard.yaml"
    config.write_text(yaml.safe_dump({"home": str(tmp_path / "home")}), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "switchyard", "config", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the command writes
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=30) == 141
    assert "Traceback" not in err
    assert err == ""


def test_the_exit_codes_are_listed_in_the_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "switchyard", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "exit codes:" in proc.stdout
    assert "  3  no Switchyard stack answering" in proc.stdout
    assert "  4  routes sync --exit-code: the live route table differs from the file" in (
        proc.stdout
    )


def test_a_missing_settings_file_is_a_usage_error(tmp_path: Path) -> None:
    code, err, _ = _run(tmp_path / "nowhere.yaml", "keys", "list")
    assert code == 2, err

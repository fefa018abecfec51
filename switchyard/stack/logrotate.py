"""Size-capped log files for the local stack's children (``<home>/logs/*.log``, and
OpenBao's audit log ``<home>/openbao/audit.log``).

Each child writes its output straight to its file (opened for appending), so a stack left up
under traffic grew its logs without end: a model-proxy writes a line for every request whose
caller left, ~190 KB per 1,000 such requests. The supervisor checks the files now and then and
rotates one past its cap by copy and truncate: the file is copied to ``<name>.log.1`` (older
copies move to ``.2``... up to ``keep``, the oldest dropped) and cut to nothing in place. The
child's descriptor stays valid and, opened in append mode, writes at the new end. A line
written between the copy and the cut is lost: the price of rotating without the child's help.
A copy keeps its file's permissions (the audit log is its owner's only).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("switchyard.stack")


def rotate(path: Path, max_bytes: int, keep: int) -> bool:
    """Rotate ``path`` if it has reached ``max_bytes``; whether it did. ``keep`` >= 1 copies.

    A file that vanished, or a copy that fails (a full disk), is left as it is and logged: the
    stack goes on either way.
    """
    try:
        size = path.stat().st_size
        if size == 0 or size < max_bytes:  # an empty file never pushes real copies out
            return False
        for n in range(keep - 1, 0, -1):
            older = path.with_name(f"{path.name}.{n}")
            if older.exists():
                older.replace(path.with_name(f"{path.name}.{n + 1}"))
        copy = path.with_name(f"{path.name}.1")
        # Made with the file's own mode from the start (an audit log is 0600: a copy made by
        # copyfile was 0644 until copymode caught up, reviewer).
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, path.stat().st_mode & 0o777)
        with open(path, "rb") as source, os.fdopen(fd, "wb") as target:
            os.fchmod(target.fileno(), path.stat().st_mode & 0o777)  # (a copy already there)
            shutil.copyfileobj(source, target)
        os.truncate(path, 0)
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("could not rotate %s: %s", path, exc)
        return False
    return True


def rotate_all(paths: Iterable[Path], max_bytes: int, keep: int) -> list[Path]:
    """Rotate each of ``paths`` that reached ``max_bytes``; the ones rotated."""
    return [path for path in paths if rotate(path, max_bytes, keep)]

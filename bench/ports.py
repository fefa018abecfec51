"""Free loopback ports, handed out without repeats within one run.

The OS picks each port (bind to port 0); we remember what we handed out so two services never get
the same one, and can ask for a pair (OpenBao uses ``port`` and ``port + 1``).
"""

from __future__ import annotations

import socket


class PortAllocator:
    """Hands out distinct free TCP ports on 127.0.0.1."""

    def __init__(self) -> None:
        self._taken: set[int] = set()

    @staticmethod
    def _is_free(port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True

    def one(self) -> int:
        """A free port not handed out before."""
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port: int = sock.getsockname()[1]
            if port not in self._taken:
                self._taken.add(port)
                return port
        raise RuntimeError("could not find a free port")

    def pair(self) -> int:
        """A free port whose successor is free too; both are reserved."""
        for _ in range(200):
            port = self.one()
            if port + 1 < 65536 and port + 1 not in self._taken and self._is_free(port + 1):
                self._taken.add(port + 1)
                return port
        raise RuntimeError("could not find two consecutive free ports")

"""Make sure the external tools exist: nginx (with the echo module) and wrk.

They are Debian packages, not Python ones, so a fresh clone may lack them. We install them with
apt only when something is missing (idempotent, and quick when all is present), and otherwise
stop with a message that says exactly what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("nginx-light", "libnginx-mod-http-echo", "wrk")
ECHO_MODULE_CANDIDATES = (
    Path("/usr/lib/nginx/modules/ngx_http_echo_module.so"),
    Path("/usr/share/nginx/modules/ngx_http_echo_module.so"),
    Path("/usr/lib64/nginx/modules/ngx_http_echo_module.so"),
)


class MissingToolError(RuntimeError):
    """A required tool is absent and could not be installed."""


@dataclass(frozen=True)
class Tools:
    """Absolute paths of the external tools the benchmark runs."""

    nginx: Path
    wrk: Path
    echo_module: Path


def _find() -> tuple[Path | None, Path | None, Path | None]:
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    wrk = shutil.which("wrk")
    module = next((p for p in ECHO_MODULE_CANDIDATES if p.is_file()), None)
    return (
        Path(nginx) if nginx else None,
        Path(wrk) if wrk else None,
        module,
    )


def _apt_install() -> None:
    """Install the packages with apt-get; raises MissingToolError when that is impossible."""
    hint = f"install them with: apt-get install -y {' '.join(PACKAGES)}"
    if shutil.which("apt-get") is None:
        raise MissingToolError(
            f"nginx, its echo module or wrk is missing and apt-get is not available; {hint}"
        )
    if os.geteuid() != 0:
        raise MissingToolError(
            f"nginx, its echo module or wrk is missing (need root to install); sudo {hint}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"bench: installing {' '.join(PACKAGES)} with apt-get ...", flush=True)
    install = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    if subprocess.run(install, env=env, check=False).returncode != 0:
        # A fresh container often has no package lists yet.
        subprocess.run(["apt-get", "update"], env=env, check=False)
        if subprocess.run(install, env=env, check=False).returncode != 0:
            raise MissingToolError(f"apt-get could not install the tools; {hint}")


def ensure_tools() -> Tools:
    """The tools' paths, installing the Debian packages first when any is missing."""
    nginx, wrk, module = _find()
    if nginx is None or wrk is None or module is None:
        _apt_install()
        nginx, wrk, module = _find()
    if nginx is None or wrk is None or module is None:
        missing = [
            name
            for name, found in (("nginx", nginx), ("wrk", wrk), ("ngx_http_echo_module", module))
            if found is None
        ]
        raise MissingToolError(
            f"still missing after install: {', '.join(missing)}; "
            f"install with: apt-get install -y {' '.join(PACKAGES)}"
        )
    return Tools(nginx=nginx, wrk=wrk, echo_module=module)

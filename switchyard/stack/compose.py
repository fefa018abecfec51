"""``switchyard compose``: build the image without a registry and run ``compose/compose.yaml``.

Podman (rootful, with the settings in ``compose/README.md``) and podman-compose run it; the
image is built from a Debian base made with ``debootstrap`` and ``podman import`` (cached:
made once per machine) plus wheels of this checkout built on the host with ``pip wheel``.

``up`` returns once every container with a health check passes it: this Podman runs health
checks from systemd timers, which containers without systemd do not have, so ``up`` runs each
check itself (``podman healthcheck run``) until it passes or the timeout ends. ``down`` removes
everything the project made, even what a failed ``up`` left behind.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import yaml

from switchyard.errors import StackError

BASE_IMAGE = "localhost/switchyard-base:bookworm"
IMAGE = "localhost/switchyard:latest"
# Debian's python3 in the base is 3.11.2: redis needs this backport below 3.11.3, and a wheel
# resolution on a newer host Python leaves it out.
_EXTRA_WHEELS = ("async-timeout>=4.0.3",)
_DEBIAN_MIRROR = "http://deb.debian.org/debian"
_PROJECT_LABEL = "io.podman.compose.project"


@dataclass(frozen=True, slots=True)
class ComposeProject:
    """One compose deployment of this checkout.

    Attributes:
        name: the compose project (prefix of its containers, networks and volumes).
        root: the source checkout (holds ``compose/`` and ``pyproject.toml``).
        variables: compose file variables (``SY_TAIL_PORT``, ``SY_IMAGE``...).
    """

    name: str = "switchyard"
    root: Path = field(default_factory=lambda: source_root(None))
    variables: dict[str, str] = field(default_factory=dict)

    @property
    def file(self) -> Path:
        return self.root / "compose" / "compose.yaml"

    @property
    def image(self) -> str:
        return self.variables.get("SY_IMAGE", IMAGE)

    def command(self, *args: str) -> list[str]:
        return [*_podman_compose(), "-p", self.name, "-f", str(self.file), *args]

    def volume(self, name: str) -> str:
        return f"{self.name}_{name}"


def source_root(start: Path | None = None) -> Path:
    """The checkout this package runs from (or the current directory's).

    Raises:
        StackError: neither has ``compose/compose.yaml``.
    """
    here = Path(__file__).resolve().parents[2]
    for candidate in (start, here, Path.cwd()):
        if candidate is not None and (candidate / "compose" / "compose.yaml").is_file():
            return candidate
    raise StackError(
        "compose", "compose/compose.yaml not found: run from a Switchyard source checkout"
    )


def _podman_compose() -> list[str]:
    beside = Path(sys.executable).parent / "podman-compose"
    found = str(beside) if beside.is_file() else shutil.which("podman-compose")
    if not found:
        raise StackError("compose", "podman-compose not found; `pip install podman-compose`")
    return [found]


def _run(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    import os  # noqa: PLC0415

    full_env = {**os.environ, **(env or {})}
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, env=full_env, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise StackError("compose", f"{argv[0]} not found: install podman (README)") from exc
    if check and done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()[-25:]
        raise StackError(
            "compose",
            f"`{' '.join(argv[:4])} ...` failed ({done.returncode}):\n" + "\n".join(output),
        )
    return done


def image_exists(image: str) -> bool:
    return _run(["podman", "image", "exists", image], check=False).returncode == 0


def ensure_base_image(out: TextIO, *, rebuild: bool = False) -> float:
    """Make the Debian base image unless it exists. Returns the seconds it took (0 if cached).

    Raises:
        StackError: debootstrap or the import failed (it needs root and Debian's mirror).
    """
    if image_exists(BASE_IMAGE) and not rebuild:
        return 0.0
    began = time.monotonic()
    print(f"building the base image {BASE_IMAGE} (debootstrap, ~1 min, once)", file=out)
    with tempfile.TemporaryDirectory(prefix="switchyard-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(rootfs),
                _DEBIAN_MIRROR,
            ]
        )
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / cache).glob("*"):
                if item.is_file():
                    item.unlink()
        # As a context manager, Popen closes our end of the pipe and waits for tar (an open
        # pipe left to the garbage collector is a ResourceWarning, which fails a test run).
        with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
            imported = subprocess.run(
                ["podman", "import", "--change", 'CMD ["/bin/bash"]', "-", BASE_IMAGE],
                stdin=tar.stdout,
                capture_output=True,
                text=True,
                check=False,
            )
        if imported.returncode != 0 or tar.returncode != 0:
            raise StackError("compose", f"podman import failed: {imported.stderr.strip()}")
    return time.monotonic() - began


def build_image(project: ComposeProject, out: TextIO) -> dict[str, float]:
    """Build the wheels of this checkout and the image. Returns seconds per step."""
    times = {"base": ensure_base_image(out)}
    with tempfile.TemporaryDirectory(prefix="switchyard-image-") as tmp:
        context = Path(tmp)
        shutil.copy(project.root / "compose" / "Containerfile", context / "Containerfile")
        began = time.monotonic()
        print("building wheels of this checkout (pip wheel)", file=out)
        pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "-w", str(context / "wheels")]
        _run([*pip, f"{project.root}[servers]", *_EXTRA_WHEELS])
        times["wheels"] = time.monotonic() - began
        began = time.monotonic()
        print(f"building the image {project.image} (podman build)", file=out)
        previous = _image_id(project.image)
        _run(["podman", "build", "--quiet", "-t", project.image, str(context)])
        times["image"] = time.monotonic() - began
    if previous and previous != _image_id(project.image):
        # The old build lost its tag (~1 GB); one a container still uses stays.
        _run(["podman", "rmi", previous], check=False)
    return times


def _image_id(image: str) -> str:
    done = _run(["podman", "image", "inspect", "--format", "{{.Id}}", image], check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def up(
    project: ComposeProject, out: TextIO, *, build: bool = False, timeout: float = 240
) -> dict[str, float]:
    """Build (if asked or missing), start, and wait until every health check passes.

    Returns seconds per step.

    Raises:
        StackError: a step failed; the project is left as it is for ``logs`` (``down`` cleans).
    """
    times: dict[str, float] = {}
    if build or not image_exists(project.image):
        times.update(build_image(project, out))
    began = time.monotonic()
    print(f"starting {project.name} (podman-compose up)", file=out)
    _compose_up(project, timeout=timeout)
    wait_healthy(project, timeout=max(10.0, timeout - (time.monotonic() - began)))
    times["up"] = time.monotonic() - began
    return times


def layers(compose_file: Path) -> list[list[str]]:
    """The compose file's services in start order: each layer depends only on earlier ones."""
    doc = yaml.safe_load(compose_file.read_text(encoding="utf-8"))
    deps = {name: set(spec.get("depends_on") or ()) for name, spec in doc["services"].items()}
    placed: set[str] = set()
    order: list[list[str]] = []
    while len(placed) < len(deps):
        layer = sorted(n for n, d in deps.items() if n not in placed and d <= placed)
        if not layer:
            raise StackError("compose", f"dependency cycle among {sorted(set(deps) - placed)}")
        order.append(layer)
        placed.update(layer)
    return order


def one_shots(compose_file: Path) -> set[str]:
    """Services that run once and must exit 0 before their dependents start."""
    doc = yaml.safe_load(compose_file.read_text(encoding="utf-8"))
    return {n for n, spec in doc["services"].items() if str(spec.get("restart")) == "no"}


def _compose_up(project: ComposeProject, *, timeout: float) -> None:
    """Start the services layer by layer (``podman-compose up -d --no-deps``).

    podman-compose's own ordering cannot be used with this Podman: it links dependents to their
    dependencies (``--requires``), so starting a worker re-runs the finished one-shots, and
    Podman 4.3 fails to resolve the chain. A one-shot must exit 0 before the next layer.
    """
    deadline = time.monotonic() + timeout
    once = one_shots(project.file)
    for layer in layers(project.file):
        _run(project.command("up", "-d", "--no-deps", *layer), env=project.variables)
        for service in layer:
            if service not in once:
                continue
            while (code := exit_code(project, service)) is None:
                if time.monotonic() > deadline:
                    raise StackError("compose", f"{service} did not finish in {timeout:.0f}s")
                time.sleep(0.5)
            if code != 0:
                raise StackError(
                    "compose", f"{service} exited with {code}:\n{_logs(project, service)}"
                )


def _logs(project: ComposeProject, service: str) -> str:
    done = _run(["podman", "logs", f"{project.name}_{service}_1"], check=False)
    return (done.stdout + done.stderr)[-3000:]


def exit_code(project: ComposeProject, service: str) -> int | None:
    """The exit code of a service's first container, or None while it has not exited."""
    done = _run(
        [
            "podman",
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            f"{project.name}_{service}_1",
        ],
        check=False,
    )
    status, _, code = done.stdout.strip().partition(" ")
    return int(code) if done.returncode == 0 and status == "exited" else None


def containers(project: ComposeProject, *, running: bool = True) -> list[dict[str, object]]:
    """The project's containers as ``podman ps --format json`` sees them."""
    args = [
        "podman",
        "ps",
        "--format",
        "json",
        "--filter",
        f"label={_PROJECT_LABEL}={project.name}",
    ]
    if not running:
        args.insert(2, "-a")
    listing: list[dict[str, object]] = json.loads(_run(args).stdout or "[]")
    return listing


def wait_healthy(project: ComposeProject, *, timeout: float) -> None:
    """Run every running container's health check until all pass.

    Raises:
        StackError: one still fails at ``timeout`` (its name and last output are given).
    """
    deadline = time.monotonic() + timeout
    pending = {_name(c) for c in containers(project)}
    last: dict[str, str] = {}
    while pending:
        for name in sorted(pending):
            check = _run(["podman", "healthcheck", "run", name], check=False)
            text = (check.stdout + check.stderr).strip()
            if check.returncode == 0 or "has no defined healthcheck" in text:
                pending.discard(name)
            else:
                last[name] = text
        if not pending:
            return
        if time.monotonic() > deadline:
            detail = "; ".join(f"{n}: {last.get(n, '')[-200:]}" for n in sorted(pending))
            raise StackError("compose", f"not healthy in {timeout:.0f}s: {detail}")
        time.sleep(1.0)


def _name(container: dict[str, object]) -> str:
    names = container.get("Names")
    return str(names[0]) if isinstance(names, list) else str(names)


def read_state_file(project: ComposeProject, name: str) -> str | None:
    """A file of the private state volume (the demo key, the admin token), or None."""
    done = _run(
        [
            "podman",
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            f"{project.volume('state')}:/deploy/state:ro",
            "--entrypoint",
            "cat",
            project.image,
            f"/deploy/state/{name}",
        ],
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def down(project: ComposeProject, *, volumes: bool = False) -> list[str]:
    """Stop and remove the project's containers and networks (and volumes if asked).

    Anything ``podman-compose down`` missed (a half-started project) is removed by label.
    Returns what the sweep had to remove.
    """
    args = ["down", "-t", "20"] + (["-v"] if volumes else [])
    _run(project.command(*args), env=project.variables, check=False)
    label = f"label={_PROJECT_LABEL}={project.name}"
    swept: list[str] = []
    kinds = [
        ("ps", "-a", "-q"),
        ("network", "ls", "-q"),
        *([("volume", "ls", "-q")] if volumes else []),
    ]
    for kind in kinds:
        listed = _run(["podman", *kind, "--filter", label], check=False).stdout.split()
        if not listed:
            continue
        remove = ["rm", "-f"] if kind[0] == "ps" else [kind[0], "rm", "-f"]
        _run(["podman", *remove, *listed], check=False)
        swept += listed
    return swept

"""``switchyard compose ...`` (on the host) and ``switchyard deploy ...`` (in the containers).

Only argument parsing lives here; the work is in :mod:`switchyard.stack.compose` and
:mod:`switchyard.stack.containers`, imported when a command runs (the CLI starts light).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from switchyard.config import Settings

Common = Callable[[argparse.ArgumentParser], None]


def add_parsers(sub: Any, common: Common) -> None:
    """Register ``compose`` and ``deploy`` on the CLI's subparsers."""
    p = sub.add_parser("compose", help="the container deployment (Podman): build, up, down")
    actions = p.add_subparsers(dest="compose_command", required=True, metavar="ACTION")
    for name, text in (
        ("build", "build the image (base image once, then wheels of this checkout)"),
        ("up", "start every container and wait until all are healthy"),
        ("down", "stop and remove the containers and networks"),
        ("ps", "list the containers and their state"),
    ):
        c = actions.add_parser(name, help=text)
        common(c)
        c.add_argument("--project", "-p", default="switchyard", help="compose project name")
        if name == "up":
            c.add_argument("--build", action="store_true", help="rebuild the image first")
            c.add_argument("--tail-port", type=int, default=8080, help="host port of the tail")
            c.add_argument(
                "--gateway-port", type=int, default=8081, help="host port of the gateway"
            )
            c.add_argument("--timeout", type=float, default=240, help="seconds to become healthy")
            c.add_argument("--heads", type=int, default=2, help="head replicas")
            c.add_argument("--modelproxies", type=int, default=2, help="model-proxy replicas")
        if name == "down":
            c.add_argument(
                "--volumes",
                "-v",
                action="store_true",
                help="also delete the volumes: every secret, key, route, queue and counter",
            )
        c.set_defaults(handler=_cmd_compose)

    p = sub.add_parser("deploy", help="first start of a container deployment (compose, k8s)")
    actions = p.add_subparsers(dest="deploy_command", required=True, metavar="STEP")
    c = actions.add_parser("setup", help="certificates, configs, each service's credentials")
    common(c)
    c.add_argument("--bundles", type=Path, help="directory of the per-service bundles")
    c.add_argument("--nats-host", action="append", help="a NATS node's host name (repeat)")
    c.add_argument(
        "--rotate-ca",
        action="store_true",
        help="replace the CA (old one kept as ca.pem.old) and every certificate; restart "
        "every service after",
    )
    c.add_argument(
        "--target",
        choices=("compose", "kubernetes"),
        default="compose",
        help="kubernetes: StatefulSet host names (nats-0.nats...), monitoring for KEDA",
    )
    c.set_defaults(handler=_cmd_deploy)
    c = actions.add_parser("init", help="initialise OpenBao, provision streams and buckets")
    common(c)
    c.add_argument("--bundles", type=Path, help="directory of the per-service bundles")
    c.add_argument("--timeout", type=float, default=180, help="seconds to wait for the servers")
    c.set_defaults(handler=_cmd_deploy)


def _cmd_compose(args: argparse.Namespace, settings: Settings, config_file: Path | None) -> int:
    from switchyard.stack import compose  # noqa: PLC0415

    variables = {}
    if args.compose_command == "up":
        variables = {
            "SY_TAIL_PORT": str(args.tail_port),
            "SY_GATEWAY_PORT": str(args.gateway_port),
            "SY_HEADS": str(args.heads),
            "SY_MODELPROXIES": str(args.modelproxies),
        }
    project = compose.ComposeProject(name=args.project, variables=variables)
    out = sys.stdout
    match args.compose_command:
        case "build":
            times = compose.build_image(project, out)
            print("built " + ", ".join(f"{k} {v:.0f}s" for k, v in times.items()), file=out)
        case "up":
            times = compose.up(project, out, build=args.build, timeout=args.timeout)
            key = compose.read_state_file(project, "demo-key")
            print(
                f"Switchyard is up ({', '.join(f'{k} {v:.0f}s' for k, v in times.items())})\n\n"
                f"OpenAI-compatible API: http://127.0.0.1:{args.tail_port}/v1\n"
                f"Gateway and management API: http://127.0.0.1:{args.gateway_port}"
                f" (docs: /docs, admin: /admin/v1)\n"
                f"Demo client key: {key or 'none'}\n"
                f"Admin token: `switchyard compose` reads it from the state volume:\n"
                f"  podman run --rm -v {project.volume('state')}:/s:ro --entrypoint cat "
                f"{project.image} /s/admin-token\n"
                f"  (read-only, to look and change nothing: /s/admin-readonly-token)\n"
                f"Stop: switchyard compose down -p {project.name}",
                file=out,
            )
        case "down":
            swept = compose.down(project, volumes=args.volumes)
            print(f"stopped {project.name}" + (f" (swept {len(swept)} leftovers)" if swept else ""))
        case "ps":
            for c in compose.containers(project, running=False):
                names = c.get("Names")
                name = names[0] if isinstance(names, list) else names
                print(f"  {name!s:<32} {c.get('State')!s:<10} {c.get('Status', '')}", file=out)
    return 0


def _cmd_deploy(args: argparse.Namespace, settings: Settings, config_file: Path | None) -> int:
    from switchyard.stack import containers  # noqa: PLC0415

    layout = containers.DeployLayout(state=settings.home_dir)
    if args.bundles:
        layout = _replace(layout, bundles=args.bundles.resolve())
    if args.deploy_command == "setup":
        if args.target == "kubernetes":
            layout = _replace(
                layout,
                nats_hosts=containers.KUBERNETES_NATS_HOSTS,
                nats_monitor_host="0.0.0.0",  # noqa: S104  # nosec B104  (KEDA reads it; NetworkPolicy guards it)
            )
        if args.nats_host:
            layout = _replace(layout, nats_hosts=tuple(args.nats_host))
        lines = containers.setup(settings, layout, rotate_ca=args.rotate_ca)
    else:
        from switchyard.stack.provision import INCOMPLETE, skipped_report  # noqa: PLC0415

        lines, skipped = containers.init(settings, layout, timeout=args.timeout)
        print("\n".join(lines[:-1]))
        skipped_report(skipped, sys.stdout, sys.stderr, lines[-1])
        return INCOMPLETE if skipped else 0  # (the Kubernetes Job fails: its log says why)
    for line in lines:
        print(line)
    return 0


def _replace(layout: Any, **changes: Any) -> Any:
    import dataclasses  # noqa: PLC0415

    return dataclasses.replace(layout, **changes)

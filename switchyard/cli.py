"""The ``switchyard`` command: local stack, certificates, components, and operations.

Each subcommand loads the settings once (``--config``/``--home`` and ``SWITCHYARD_*``), then
hands them to the module that does the work. Errors of the Switchyard tree print as one clear
line (no traceback) and exit non-zero, with one code per kind of failure (:data:`EXIT_CODES`)
so a script can tell "no stack answering" (retry later, or look elsewhere) from a command that
failed (a key not found, a name several keys share, a refused change).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from switchyard.config import DEFAULT_CONFIG_FILE, Settings, config_path, load_settings
from switchyard.errors import (
    BusUnreachable,
    ConfigError,
    GatewayUnreachable,
    InputError,
    SwitchyardError,
)
from switchyard.stack.compose_cli import add_parsers as add_deployment_parsers
from switchyard.telemetry import setup_logging

Handler = Callable[[argparse.Namespace, Settings, Path | None], int]

FAILED = 1  # the command failed: not found, ambiguous, refused, invalid input...
USAGE = 2  # the arguments or the settings file cannot be used (argparse exits 2 too)
NO_STACK = 3  # no stack answering (as `status` says "not running (no stack in ...)")
# `routes sync --exit-code`: the check ran and found drift. Not 1, which a check that could
# not run (a refused connection, the control service down) exits with: a drift job must tell
# "the table differs" from "the check failed".
DRIFT = 4
EXIT_CODES = f"""exit codes:
  0  done
  {FAILED}  the command failed (not found, ambiguous name, refused change, invalid value)
  {USAGE}  unusable arguments or settings file
  {NO_STACK}  no Switchyard stack answering (or, for status, none in this home; for top, no
     gateway at the address); a stack that refuses this home's certificate is {FAILED}
  {DRIFT}  routes sync --exit-code: the live route table differs from the file
  5  provision, deploy init: done but for the KV buckets named on stderr (an older NATS config)
  130  interrupted (Ctrl-C)"""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help=(
            f"settings file (default: $SWITCHYARD_CONFIG, else ./{DEFAULT_CONFIG_FILE} if present)"
        ),
    )
    parser.add_argument(
        "--home",
        default=argparse.SUPPRESS,
        help=(
            "local state directory (default: `home` from the settings file or "
            "$SWITCHYARD_HOME, else ./.switchyard)"
        ),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchyard",
        description="An OpenAI-compatible LLM gateway on NATS.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("up", help="run the whole platform locally (Ctrl-C stops it)")
    _common(p)
    p.add_argument("--detach", "-d", action="store_true", help="return once healthy")
    # How `up --detach` starts its supervisor: output goes to a log, so the demo key stays out.
    p.add_argument("--logged", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(handler=_cmd_up)

    p = sub.add_parser("down", help="stop a detached local stack")
    _common(p)
    p.set_defaults(handler=_cmd_down)

    p = sub.add_parser("status", help="show each local process and its health")
    _common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_status)

    _add_top(sub)

    _add_certs(sub)

    p = sub.add_parser("serve", help="run one component (what compose and k8s use)")
    _common(p)
    p.add_argument(
        "component",
        help="tail, gateway, head, modelproxy, secrets, control, accounting or batch",
    )
    p.add_argument(
        "--instance",
        help=(
            "instance name in monitoring, metrics and traces "
            "(default: COMPONENT-HOSTNAME-PID, unique per replica)"
        ),
    )
    p.add_argument(
        "--health-port", type=_port, help="workers: serve /health and /ready here (0-65535)"
    )
    p.set_defaults(handler=_cmd_serve)

    _add_secrets(sub)

    _add_keys(sub)

    _add_import(sub)

    _add_routes(sub)

    p = sub.add_parser("provision", help="create streams, consumers and KV buckets (idempotent)")
    _common(p)
    p.set_defaults(handler=_cmd_provision)

    p = sub.add_parser(
        "config",
        help="validate the settings and print them as JSON (and whether the live routes differ)",
    )
    _common(p)
    p.set_defaults(handler=_cmd_config)

    add_deployment_parsers(sub, _common)
    return parser


def _interval(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if seconds < 0.1:
        raise argparse.ArgumentTypeError(f"`{text}` is not a number of seconds >= 0.1")
    return seconds


def _port(text: str) -> int:
    """A TCP port; the kernel would silently take a larger number modulo 65536."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"`{text}` is not a port number (0-65535)")
    return port


def _add_top(sub: Any) -> None:
    p = sub.add_parser("top", help="live view of queues, traffic and processes (q quits)")
    _common(p)
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")
    p.add_argument("--json", action="store_true", help="with --once: the overview as JSON")
    p.add_argument("--interval", type=_interval, default=1.0, help="seconds between refreshes")
    p.add_argument("--url", help="gateway URL (default: this stack's gateway, from the settings)")
    p.add_argument("--token-file", type=Path, help="admin token file (default: admin.token_file)")
    p.set_defaults(handler=_cmd_top)


def _add_import(sub: Any) -> None:
    p = sub.add_parser("import", help="migrate configuration from another gateway")
    imports = p.add_subparsers(dest="import_command", required=True, metavar="SOURCE")
    c = imports.add_parser("litellm-config", help="a LiteLLM proxy config.yaml (model_list)")
    _common(c)
    c.add_argument("file", type=Path)
    c.add_argument("--output", type=Path, help="write providers and routes as YAML here")
    c.add_argument("--apply", action="store_true", help="merge into the running stack's routes")
    c.add_argument(
        "--secrets-from-env",
        action="store_true",
        help="with --apply: store keys named os.environ/NAME from this shell's environment",
    )
    c.add_argument(
        "--allow-missing-secrets",
        action="store_true",
        help="with --apply --secrets-from-env: apply even if a variable named is not set",
    )
    c.add_argument(
        "--replace",
        action="store_true",
        help="with --apply: replace live providers/routes of the same name that differ",
    )
    c.add_argument(
        "--allow-partial",
        action="store_true",
        help="with --apply: import even if some model_list entries cannot be imported",
    )
    c.set_defaults(handler=_cmd_import)


def _add_routes(sub: Any) -> None:
    p = sub.add_parser("routes", help="the live route table versus the settings file")
    routes = p.add_subparsers(dest="routes_command", required=True, metavar="ACTION")
    c = routes.add_parser(
        "sync", help="preview (or --apply) making the live route table the file's"
    )
    _common(c)
    c.add_argument(
        "--merge",
        action="store_true",
        help="keep providers and routes that exist only in the live table (default: replace)",
    )
    c.add_argument("--apply", action="store_true", help="write it (default: preview only)")
    c.add_argument(
        "--expected-revision",
        type=_revision,
        metavar="N",
        help="with --apply: write only if the live table is still at revision N (the preview's)",
    )
    c.add_argument(
        "--exit-code",
        action="store_true",
        help=f"preview: exit {DRIFT} when the live table differs from the file, 0 when it "
        f"matches ({FAILED} when the check fails, {NO_STACK} when no stack answers)",
    )
    c.set_defaults(handler=_cmd_routes_sync)


def _revision(text: str) -> int:
    try:
        revision = int(text)
    except ValueError:
        revision = -1
    if revision < 0:
        raise argparse.ArgumentTypeError(f"`{text}` is not a revision number")
    return revision


def _add_certs(sub: Any) -> None:
    p = sub.add_parser("certs", help="create the CA and identity certificates")
    certs = p.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    c = certs.add_parser("init", help="CA, server and every service identity (idempotent)")
    _common(c)
    c.add_argument("--dir", type=Path, help="where to write (default: <home>/certs)")
    c.add_argument("--force", action="store_true", help="re-issue valid certificates too")
    c.add_argument(
        "--rotate-ca",
        action="store_true",
        help="replace the CA (old one kept as ca.pem.old) and every certificate; restart "
        "every process after, and give internal clients their new certificates",
    )
    c.set_defaults(handler=_cmd_certs_init)
    c = certs.add_parser("issue", help="a certificate for an extra identity (internal client)")
    _common(c)
    c.add_argument("name", help="identity name: lowercase letters, digits, dashes")
    c.add_argument("--dir", type=Path, help="where to write (default: <home>/certs)")
    c.add_argument("--force", action="store_true", help="re-issue even if valid")
    c.add_argument(
        "--new-ca",
        action="store_true",
        help="create a CA in --dir if it has none (a stack using another CA will not trust it)",
    )
    c.set_defaults(handler=_cmd_certs_issue)


def _add_secrets(sub: Any) -> None:
    p = sub.add_parser("secrets", help="provider keys in Vault/OpenBao (values never echoed)")
    sec = p.add_subparsers(dest="secrets_command", required=True, metavar="ACTION")
    for action, text in (
        ("put", "store a key (new or new version)"),
        ("rotate", "replace an existing key"),
    ):
        c = sec.add_parser(action, help=text)
        _common(c)
        c.add_argument("name", help="secret name, e.g. openai-prod")
        source = c.add_mutually_exclusive_group()
        source.add_argument("--from-stdin", action="store_true", help="read the value from stdin")
        source.add_argument("--value-file", type=Path, help="read the value from a file")
        if action == "put":
            c.add_argument("--provider", default="", help="label: which provider it is for")
        c.set_defaults(handler=_cmd_secrets)
    c = sec.add_parser("list", help="names and metadata (never values)")
    _common(c)
    c.add_argument("--json", action="store_true")
    c.set_defaults(handler=_cmd_secrets)
    c = sec.add_parser("show", help="one secret's metadata")
    _common(c)
    c.add_argument("name")
    c.add_argument("--json", action="store_true")
    c.set_defaults(handler=_cmd_secrets)
    c = sec.add_parser("rm", help="delete a key and all its versions")
    _common(c)
    c.add_argument("name")
    c.add_argument(
        "--force",
        action="store_true",
        help="delete it even if a provider uses it (asked on a terminal; needed without one)",
    )
    c.set_defaults(handler=_cmd_secrets)


def _add_keys(sub: Any) -> None:
    from switchyard.admin.keys_parser import add_keys_parser  # noqa: PLC0415

    add_keys_parser(sub, _common, _cmd_keys)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    if getattr(args, "home", None):
        overrides["home"] = args.home
    try:
        config_file = config_path(getattr(args, "config", None))
        settings = load_settings(config_file, overrides=overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE
    component = getattr(args, "instance", None) or getattr(args, "component", None) or args.command
    # The processes that run and log (`serve`, `up`'s supervisor) keep every library's lines.
    setup_logging(settings.logging, component, libraries=args.command in ("serve", "up"))
    handler: Handler = args.handler
    try:
        return handler(args, settings, config_file)
    except BusUnreachable as exc:
        from switchyard.stack.attach import unreachable_message  # noqa: PLC0415

        print(f"error: {unreachable_message(settings, exc)}", file=sys.stderr)
        return FAILED if exc.refused else NO_STACK  # a refused certificate stays refused
    except GatewayUnreachable as exc:  # `top`: no gateway at the address, or no stack here
        print(f"error: {exc}", file=sys.stderr)
        return NO_STACK
    except SwitchyardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `switchyard status | head`: the reader left; no traceback, and no second error when
        # Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _cmd_up(args: argparse.Namespace, settings: Settings, config_file: Path | None) -> int:
    from switchyard.stack import commands  # noqa: PLC0415  (keep CLI start-up light)

    return commands.up(
        settings, config_file, detach=args.detach, out=sys.stdout, reveal_key=not args.logged
    )


def _cmd_down(args: argparse.Namespace, settings: Settings, config_file: Path | None) -> int:
    from switchyard.stack import commands  # noqa: PLC0415

    return commands.down(settings, out=sys.stdout)


def _cmd_status(args: argparse.Namespace, settings: Settings, config_file: Path | None) -> int:
    from switchyard.stack import commands  # noqa: PLC0415
    from switchyard.top import read_overview  # noqa: PLC0415

    routing = functools.partial(read_overview, settings)
    return commands.status(settings, as_json=args.json, out=sys.stdout, routing=routing)


def _cmd_top(args: argparse.Namespace, settings: Settings, config_file: Path | None) -> int:
    from switchyard.top import resolve_target, run_top  # noqa: PLC0415

    if args.json and not args.once:
        print("error: --json prints one snapshot: use it with --once", file=sys.stderr)
        return 2
    target = resolve_target(settings, args.url, args.token_file)
    return run_top(
        target, once=args.once, as_json=args.json, interval=args.interval, out=sys.stdout
    )


def _cert_dir(args: argparse.Namespace, settings: Settings) -> Path:
    return Path(args.dir).resolve() if args.dir else settings.certs_dir


def _cmd_certs_init(args: argparse.Namespace, settings: Settings, config_file: Path | None) -> int:
    from switchyard.bus.identities import certificate_subjects  # noqa: PLC0415
    from switchyard.stack.certs import ca_ends_soon, init_certificates  # noqa: PLC0415

    clients = certificate_subjects(settings.nats.internal_clients)
    directory = _cert_dir(args, settings)
    results = init_certificates(
        directory,
        organization=settings.certs.organization,
        validity_days=settings.certs.validity_days,
        clients=clients,
        force=args.force,
        rotate_ca=args.rotate_ca,
    )
    for r in results:
        print(f"  {'created' if r.created else 'kept   '}  {r.name:<12} {r.path}")
    print(f"certificates in {directory} (private keys are 0600)")
    ends = ca_ends_soon(directory)
    if ends is not None:  # kept, never replaced unasked: say so while there is time
        print(
            f"warning: the CA expires on {ends:%Y-%m-%d} UTC; replace it before then with "
            f"`switchyard certs init --rotate-ca`, then restart every process",
            file=sys.stderr,
        )
    return 0


def _cmd_certs_issue(args: argparse.Namespace, settings: Settings, config_file: Path | None) -> int:
    import re  # noqa: PLC0415

    from switchyard.config.settings import CERT_FILE_NAMES, SERVICE_NAMES  # noqa: PLC0415
    from switchyard.stack.certs import (  # noqa: PLC0415
        CertificateAuthority,
        missing_ca_files,
    )

    name: str = args.name
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,62}", name):
        raise InputError("name", f"`{name}` is not a valid identity name", "use a-z, 0-9 and -")
    if name in CERT_FILE_NAMES:  # its files would overwrite the CA's or a server's
        raise InputError(
            "name", f"`{name}` names one of the stack's own certificates", "pick another name"
        )
    if name in SERVICE_NAMES:  # it handed back the service's own certificate, as if issued
        raise InputError(
            "name",
            f"`{name}` is a Switchyard service's identity: its certificate is the service's own",
            "give the internal client a name of its own (e.g. `billing-bot`); `switchyard certs "
            "init` issues and renews the services' certificates",
        )
    directory = _cert_dir(args, settings)
    if args.new_ca and missing_ca_files(directory):
        ca, _ = CertificateAuthority.load_or_create(
            directory, settings.certs.organization, settings.certs.validity_days
        )
        print(f"created a new CA in {directory} (only what trusts it accepts this one)")
    elif args.new_ca:  # one is there: kept as it is (renewing it would orphan what it signed)
        ca = CertificateAuthority.load(directory)
    else:  # a CA made on the side signs certificates the stack's NATS refuses
        missing = missing_ca_files(directory)
        if missing:
            raise InputError(
                "--dir",
                f"no CA in {directory} ({', '.join(p.name for p in missing)} not found)",
                f"pass the stack's certificates directory (default {settings.certs_dir}), "
                "create everything there with `switchyard certs init --dir DIR`, or pass "
                "--new-ca to start a new CA in it",
            )
        ca = CertificateAuthority.load(directory)
    result = ca.issue(
        directory,
        name,
        cn=name,
        ou="client",  # internal clients' DN (kept from when they lived in CLIENT)
        organization=settings.certs.organization,
        validity_days=settings.certs.validity_days,
        force=args.force,
    )
    print(f"{'created' if result.created else 'kept'} {result.path}")
    if name not in settings.nats.internal_clients:
        print(
            f"note: add `{name}` to nats.internal_clients in your config so the server maps "
            "this certificate to a user of the INTERNAL account (the LLM API only)"
        )
    return 0


def _cmd_serve(args: argparse.Namespace, settings: Settings, config_file: Path | None) -> int:
    from switchyard.serve import serve  # noqa: PLC0415

    return serve(args.component, settings, instance=args.instance, health_port=args.health_port)


def _attached(settings: Settings) -> Settings:
    """The settings with the running local stack's ports (see :mod:`switchyard.stack.attach`)."""
    from switchyard.stack.attach import live_settings  # noqa: PLC0415

    return live_settings(settings)


def _cmd_secrets(args: argparse.Namespace, settings: Settings, config_file: Path | None) -> int:
    from switchyard.secrets.cli import run_secrets_command  # noqa: PLC0415

    return asyncio.run(run_secrets_command(args, _attached(settings), sys.stdin, sys.stdout))


def _cmd_import(args: argparse.Namespace, settings: Settings, config_file: Path | None) -> int:
    from switchyard.control.import_cli import run_import  # noqa: PLC0415

    if args.apply:
        return run_import(args, _attached(settings), sys.stdout, sys.stderr)
    try:  # the preview checks the running local stack's live table when there is one
        live = _attached(settings)
    except BusUnreachable:
        live = settings
    return run_import(args, live, sys.stdout, sys.stderr)


def _cmd_keys(args: argparse.Namespace, settings: Settings, config_file: Path | None) -> int:
    from switchyard.admin.keys_cli import keys_command  # noqa: PLC0415

    return keys_command(args, _attached(settings), sys.stdout)


def _cmd_routes_sync(args: argparse.Namespace, settings: Settings, config_file: Path | None) -> int:
    from switchyard.control.sync_cli import run_sync  # noqa: PLC0415

    if args.expected_revision is not None and not args.apply:
        print("error: --expected-revision checks what --apply writes: add --apply", file=sys.stderr)
        return USAGE
    if args.exit_code and args.apply:
        print("error: --exit-code is for the preview: leave out --apply", file=sys.stderr)
        return USAGE
    return run_sync(args, _attached(settings), config_file, sys.stdout, drift=DRIFT)


def _cmd_provision(args: argparse.Namespace, settings: Settings, config_file: Path | None) -> int:
    from nats.errors import Error as NatsError  # noqa: PLC0415
    from nats.js.errors import APIError  # noqa: PLC0415

    from switchyard.stack.local import provision_stack  # noqa: PLC0415
    from switchyard.stack.provision import INCOMPLETE, skipped_report  # noqa: PLC0415

    try:
        skipped = asyncio.run(provision_stack(_attached(settings), one_shot=True))
    except TimeoutError:  # slow, not refused (a refusal is a skipped bucket): run it again
        print("error: NATS JetStream did not answer in time; run it again", file=sys.stderr)
        return FAILED
    except NatsError as exc:  # no JetStream answering, or a JetStream error (was a traceback)
        why = type(exc).__name__
        if isinstance(exc, APIError) and exc.description:
            why += f" {exc.code}: {exc.description}"  # (the server's words, no secret)
        print(
            f"error: NATS JetStream did not provision ({why}); check that JetStream is enabled "
            "and up (`switchyard status`), then run it again",
            file=sys.stderr,
        )
        return FAILED
    skipped_report(skipped, sys.stdout, sys.stderr, "provisioned streams, consumers and KV buckets")
    return INCOMPLETE if skipped else 0


def _cmd_config(args: argparse.Namespace, settings: Settings, config_file: Path | None) -> int:
    import msgspec  # noqa: PLC0415

    from switchyard.stack.natsconf import body_ceiling_note  # noqa: PLC0415

    print(json.dumps(msgspec.to_builtins(settings), indent=2))
    if (ceiling := body_ceiling_note(settings.ingress.max_body_bytes)) is not None:
        print(ceiling, file=sys.stderr)  # (stdout stays JSON)
    _note_route_drift(settings, config_file)
    return 0


def _note_route_drift(settings: Settings, config_file: Path | None) -> None:
    """On stderr (stdout stays JSON): the file's routes are not what a running stack serves."""
    from switchyard.control.sync_cli import file_drift  # noqa: PLC0415
    from switchyard.stack.attach import running_state  # noqa: PLC0415
    from switchyard.stack.home import StackHome  # noqa: PLC0415

    if running_state(StackHome(settings.home_dir)) is None:
        return
    try:
        lines = asyncio.run(file_drift(_attached(settings), config_file))
    except SwitchyardError as exc:
        lines = [f"note: could not compare the routes with the running stack: {exc}"]
    for line in lines:
        print(line, file=sys.stderr)

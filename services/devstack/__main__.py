"""``python -m devstack up [component ...] | down | reset | status | setup-triton | env | start-app | stop-app``.

``make stack-up``/``stack-down``/``stack-reset``/``stack-status`` call it; ``start-app NAME --health URL -- CMD``
runs a platform process (e.g. ``python -m bff``) as a managed daemon with the stack's environment.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from devstack.instance import StackInstance, StackRecordError
from devstack.processes import DaemonStartError
from devstack.settings import Settings
from devstack.stack import COMPONENTS, LocalStack, PortsTakenError
from devstack.system_services import SystemServiceError
from devstack.triton_home import TritonSetupError
from mlops_common.logging import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the stack (idempotent, health-checked)")
    up.add_argument("components", nargs="*", help=f"only these (default: all of {', '.join(COMPONENTS)})")
    commands.add_parser("down", help="stop what devstack started; system services stay up")
    commands.add_parser(
        "reset", help="down, then delete the stack's state: .stack/ and its database, vhost and Redis keys"
    )
    commands.add_parser("status", help="one line per component; exit 1 if any is down")
    commands.add_parser("setup-triton", help="lay out the Triton home under .stack/triton/home")
    start_app = commands.add_parser(
        "start-app", help="run a platform process as a managed daemon: start-app NAME [--health URL] -- CMD..."
    )
    start_app.add_argument("name")
    start_app.add_argument("--health", help="URL that answers 2xx once the process is ready")
    start_app.add_argument("module", nargs="?", help="run `python -m MODULE` (or give a command line after --)")
    stop_app = commands.add_parser("stop-app", help="stop one daemon started by devstack")
    stop_app.add_argument("name")
    commands.add_parser("env", help="print the platform's environment for this stack as shell exports")
    argv = sys.argv[1:] if argv is None else argv
    # Everything after `--` is the app's own command line, options included.
    app_command: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, app_command = argv[:split], argv[split + 1 :]
    args = parser.parse_args(argv)

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    stack = LocalStack(settings)
    try:
        if args.command == "up":
            stack.up(args.components or None)
            print(_status_report(stack)[0])
            return 0
        if args.command == "down":
            stopped = stack.down()
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
            return 0
        if args.command == "reset":
            deleted = stack.reset()
            print("\n  ".join(["deleted:", *deleted]) if deleted else "nothing to delete: no stack state found")
            return 0
        if args.command == "status":
            report, all_up = _status_report(stack)
            print(report)
            return 0 if all_up else 1
        if args.command == "setup-triton":
            home = stack.triton_home()
            print(f"Triton home: {home.home} (server {home.server})")
            return 0
        if args.command == "start-app":
            if bool(app_command) == bool(args.module):
                parser.error("start-app needs either a module or a command line after --")
            daemon = stack.start_app(args.name, app_command or args.module, health=args.health)
            print(f"{args.name} up, pid {daemon.pid()}, log {daemon.log_path}")
            return 0
        if args.command == "stop-app":
            print(f"{args.name} {'stopped' if stack.stop_app(args.name) else 'was not running'}")
            return 0
        if args.command == "env":
            env = stack.settings.platform_env()
            print("\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items()))
            return 0
    except (
        DaemonStartError,
        PortsTakenError,
        StackRecordError,
        SystemServiceError,
        TritonSetupError,
        ValueError,
    ) as err:
        print(f"devstack {args.command} failed: {err}", file=sys.stderr)
        return 1
    return 2


def _status_report(stack: LocalStack) -> tuple[str, bool]:
    """The stack's identity line, then one line per component; and whether all are up."""
    statuses = stack.status()
    instance = StackInstance.load(stack.base_settings.stack_dir)
    identity = (
        f"stack {instance.id} in {stack.base_settings.stack_dir}: MLflow database {instance.mlflow_db_name}, "
        f"Feast project {instance.feast_project}, RabbitMQ vhost {instance.rabbitmq_vhost}, "
        f"jobs database {instance.jobs_db_name}"
        if instance
        else f"no stack in {stack.base_settings.stack_dir} yet (make stack-up creates it)"
    )
    prometheus = stack.base_settings.prometheus_url
    metrics = [f"metrics endpoints, scraped by Prometheus ({prometheus}/targets):"]
    metrics += [
        f"  {component:<12} {'up' if answering else 'down':<5} {url}"
        for component, url, answering in stack.metrics_endpoints()
    ]
    lines = [identity, *(c.line() for c in statuses), *metrics]
    return "\n".join(lines), all(c.up for c in statuses)


if __name__ == "__main__":
    sys.exit(main())

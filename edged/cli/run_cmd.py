"""``edged run -c CONFIG``: run the daemon in the foreground (systemd's ExecStart)."""

import argparse
import logging


def add_parser(commands: "argparse._SubParsersAction") -> None:
    p = commands.add_parser(
        "run",
        help="run the daemon",
        description="Run edged: streams -> models -> results, until SIGTERM or SIGINT. "
        "SIGHUP reloads the config file.",
    )
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="the config file")
    p.set_defaults(run=run, log_default=logging.INFO)


def run(args: argparse.Namespace) -> int:
    from ..daemon import Daemon

    return Daemon(args.config).run()

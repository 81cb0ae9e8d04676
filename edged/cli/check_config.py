"""``edged check-config FILE...``: validate config files; exit 0, or 2 with the first problem."""

import argparse

from ..config import load_config


def add_parser(commands: "argparse._SubParsersAction") -> None:
    p = commands.add_parser(
        "check-config",
        help="validate config files",
        description="Validate config files against edged's schema. Exit 0 when all are "
        "valid, 2 with a message naming the file and key path otherwise.",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument(
        "--load-models",
        action="store_true",
        help="also load every model (files, keys, labels and tensor names are checked)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for path in args.files:
        config = load_config(path)
        if args.load_models:
            from ..tasks.loader import load_task
            from . import engines_for

            for model in config.models.values():
                load_task(model, engines_for(model)).backend.close()
        print("{}: ok ({} model{})".format(path, len(config.models),
              "" if len(config.models) == 1 else "s"))  # fmt: skip
    return 0

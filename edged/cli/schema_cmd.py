"""``edged schema``: print the config's JSON Schema (the source of configs/edged.schema.json)."""

import argparse
import json

from ..config import schema


def add_parser(commands: "argparse._SubParsersAction") -> None:
    p = commands.add_parser("schema", help="print the config file's JSON Schema")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print(json.dumps(schema(), indent=2))
    return 0

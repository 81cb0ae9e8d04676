"""The ``edged`` command line.

Every :class:`~edged.errors.EdgedError` becomes one line on stderr and exit
code 2 (bad input never produces a traceback); anything else is a
bug and keeps its traceback.
"""

import argparse
import logging
import sys
from typing import Any, List, Optional

from .. import __version__
from ..errors import EdgedError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # bad config, model, key or input: the user can fix it


def build_parser() -> argparse.ArgumentParser:
    from . import build as build_cmd  # edged build
    from . import cache as cache_cmd  # edged cache list|verify|prune
    from . import (
        check_config,
        infer,
        keys_cmd,  # keygen, keys, sign: the operator's side of model updates
        push,  # edged push: a signed manifest to devices over MQTT
        run_cmd,
        schema_cmd,
    )
    from . import convert as convert_cmd  # tao-converter's command line
    from . import watch as watch_cmd  # edged watch (MQTT live view)

    parser = argparse.ArgumentParser(
        prog="edged",
        description="Inference daemon for NVIDIA Jetson: TAO/ONNX models on camera streams.",
    )
    parser.add_argument("--version", action="version", version="edged " + __version__)
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for module in (
        run_cmd, infer, check_config, schema_cmd, build_cmd, convert_cmd, cache_cmd, watch_cmd,
        keys_cmd, push,
    ):  # fmt: skip
        module.add_parser(commands)
    return parser


def engines_for(model: Any) -> Any:
    """A default :class:`~edged.engine.EngineManager` for a TensorRT ``model``, else None.

    :func:`edged.tasks.loader.load_task` needs one for ``backend: tensorrt``; the daemon passes
    its own, one-shot commands (infer, check-config) this one.
    """
    if model.backend != "tensorrt":
        return None
    from ..config import EngineConfig
    from ..engine import EngineManager

    return EngineManager(EngineConfig())


def setup_logging(verbosity: int, default: int = logging.WARNING) -> None:
    level = default - 10 * min(verbosity, 2)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, getattr(args, "log_default", logging.WARNING))
    try:
        return int(args.run(args) or EXIT_OK)
    except EdgedError as e:
        print(f"edged: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("edged: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `edged infer ... | head`
        return EXIT_OK


def entry_point() -> None:
    sys.exit(main())

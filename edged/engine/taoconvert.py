"""tao-converter's command line, read as data: parse it, check it, turn it into build options.

``edged convert`` accepts the command lines NVIDIA's model cards and TAO tutorials print for the
closed ``tao-converter`` binary (flags as in its ``-h``: ``-k -d -o -e -m -t -c -b -w -i -p -s -u``,
the model file last). Everything here is pure: :func:`parse_command` turns argv into a
:class:`ConvertRequest`, :func:`refusals` says which flags the TensorRT at hand cannot honour,
and :func:`build_options` maps the request onto :class:`~edged.engine.options.BuildOptions`.
docs/convert.md maps every flag to its edged config key.
"""

import argparse
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..errors import ConfigError
from .options import BuildOptions, Profile

#: tao-converter's defaults (its ``-h`` text): engine file, max batch, data type, workspace,
#: calibration batch, input order.
DEFAULT_ENGINE = "saved.engine"
DEFAULT_MAX_BATCH = 16
DEFAULT_TYPE = "fp32"
DEFAULT_WORKSPACE = 1 << 30
DEFAULT_CALIBRATION_BATCH = 8
INPUT_ORDERS = ("nchw", "nhwc", "nc")


class ConvertRequest(NamedTuple):
    """One tao-converter command line, parsed (paths as given)."""

    model: str
    key: Optional[str]
    dims: Optional[Tuple[int, ...]]  # -d, in the order -i names
    outputs: Tuple[str, ...]  # -o
    engine: str  # -e
    max_batch: int  # -m
    precision: str  # -t
    calibration_cache: Optional[str]  # -c
    calibration_batch: int  # -b
    workspace_bytes: int  # -w
    input_order: str  # -i
    profiles: Dict[str, Profile]  # -p
    strict_types: bool  # -s
    dla_core: int  # -u, -1 for none
    verbose: bool  # -v
    # edged's own options
    json: bool
    cache_dir: Optional[str]
    tensorrt_module: Optional[str]
    progress: str
    force: bool
    given: Tuple[str, ...]  # the flags the user gave, for messages


class _Parser(argparse.ArgumentParser):
    """argparse that raises one ConfigError line instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError("edged convert: " + message + " (edged convert -h lists the flags)")


def _parser() -> _Parser:
    p = _Parser(
        prog="edged convert",
        description="Build a TensorRT engine from a TAO .etlt or ONNX model with tao-converter's "
        "command line: replace `tao-converter` by `edged convert` in NVIDIA's documented commands. "
        "The engine is built through edged's engine cache and written to -e with its manifest "
        "beside it (<engine>.json). Exit 0: written (or unchanged), 2: bad flags, model or key, "
        "3: the build failed.",
        allow_abbrev=False,
    )
    p.add_argument("-k", dest="key", metavar="KEY", help="the model's encryption key (.etlt)")
    p.add_argument("-d", dest="dims", metavar="DIMS", help="input dimensions, e.g. 3,544,960")
    p.add_argument(
        "-o", dest="outputs", metavar="NODES", help="output node names (UFF), comma-separated"
    )
    p.add_argument("-e", dest="engine", metavar="FILE", default=DEFAULT_ENGINE,
                   help="engine file to write (default: %(default)s)")  # fmt: skip
    p.add_argument("-m", dest="max_batch", type=_positive("-m"), default=DEFAULT_MAX_BATCH,
                   metavar="N", help="maximum batch size (default: %(default)s)")  # fmt: skip
    p.add_argument("-t", dest="precision", choices=("fp32", "fp16", "int8"), default=DEFAULT_TYPE,
                   help="engine data type (default: %(default)s)")  # fmt: skip
    p.add_argument("-c", dest="calibration_cache", metavar="FILE", help="INT8 calibration cache")
    p.add_argument("-b", dest="calibration_batch", type=_positive("-b"),
                   default=DEFAULT_CALIBRATION_BATCH, metavar="N",
                   help="calibration batch size (default: %(default)s)")  # fmt: skip
    p.add_argument("-w", dest="workspace", type=_positive("-w"), default=DEFAULT_WORKSPACE,
                   metavar="BYTES", help="maximum workspace in bytes (default: 1<<30)")  # fmt: skip
    p.add_argument("-i", dest="input_order", choices=INPUT_ORDERS, default="nchw",
                   help="input dimension order of -d (default: %(default)s)")  # fmt: skip
    p.add_argument("-p", dest="profiles", action="append", default=[], metavar="PROFILE",
                   help="optimization profile input,min,opt,max with shapes like 1x3x544x960 "
                   "(repeatable)")  # fmt: skip
    p.add_argument("-s", dest="strict_types", action="store_true",
                   help="layers keep the requested precision (strict types)")  # fmt: skip
    p.add_argument("-u", dest="dla_core", type=int, default=-1, metavar="N",
                   help="build for DLA core N (Xavier); -1: the GPU (default)")  # fmt: skip
    p.add_argument("-v", dest="verbose", action="store_true", help="log TensorRT's messages")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--cache-dir", metavar="DIR", help="engine cache (default: edged's)")
    p.add_argument("--tensorrt-module", metavar="NAME",
                   help="tensorrt, tensorrt_rtx, ... (default: auto)")  # fmt: skip
    p.add_argument("--progress", choices=("auto", "bar", "lines", "none"), default="auto",
                   help="progress on stderr: a bar on a terminal, lines otherwise")  # fmt: skip
    p.add_argument("--force", action="store_true", help="rebuild even when the cache has it")
    p.add_argument("model", metavar="MODEL", help="the .etlt or .onnx model file")
    return p


def usage() -> str:
    return _parser().format_help()


def _positive(flag: str) -> Any:
    def convert(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{value} must be at least 1")
        return value

    convert.__name__ = flag  # argparse names the flag's type in its message
    return convert


def parse_dims(flag: str, text: str, sep: str) -> Tuple[int, ...]:
    """``3,544,960`` (sep ``,``) or ``1x3x544x960`` (sep ``x``) -> positive ints."""
    parts = text.strip().split(sep)
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{flag} {text}: expected integers separated by {sep!r}") from None
    if not dims or any(d < 1 for d in dims):
        raise ConfigError(f"{flag} {text}: every dimension must be at least 1")
    return dims


def parse_profile(text: str) -> Tuple[str, Profile]:
    """``input_1,1x3x544x960,4x3x544x960,16x3x544x960`` -> (name, (min, opt, max))."""
    parts = text.split(",")
    if len(parts) != 4 or not parts[0]:
        raise ConfigError(f"-p {text}: expected input,min,opt,max (shapes like 1x3x544x960)")
    lo, opt, hi = (parse_dims("-p", p, "x") for p in parts[1:])
    if not (len(lo) == len(opt) == len(hi)):
        raise ConfigError(f"-p {text}: min, opt and max need the same number of dimensions")
    if any(not (a <= b <= c) for a, b, c in zip(lo, opt, hi)):
        raise ConfigError(f"-p {text}: need min <= opt <= max in every dimension")
    return parts[0], (lo, opt, hi)


def parse_command(argv: Sequence[str]) -> ConvertRequest:
    """tao-converter's argv (without the program name) -> :class:`ConvertRequest`.

    Raises:
        ConfigError: an unknown flag, a malformed value or a missing model (one line).
    """
    args = _parser().parse_args(list(argv))
    profiles = {}  # type: Dict[str, Profile]
    for text in args.profiles:
        name, profile = parse_profile(text)
        if name in profiles:
            raise ConfigError(f"-p {text}: input {name} has two profiles")
        profiles[name] = profile
    dims = parse_dims("-d", args.dims, ",") if args.dims else None
    outputs = tuple(n.strip() for n in args.outputs.split(",") if n.strip()) if args.outputs else ()
    given = tuple(a for a in argv if a.startswith("-") and len(a) == 2)
    return ConvertRequest(
        model=args.model,
        key=args.key,
        dims=dims,
        outputs=outputs,
        engine=args.engine,
        max_batch=args.max_batch,
        precision=args.precision,
        calibration_cache=args.calibration_cache,
        calibration_batch=args.calibration_batch,
        workspace_bytes=args.workspace,
        input_order=args.input_order,
        profiles=profiles,
        strict_types=args.strict_types,
        dla_core=args.dla_core,
        verbose=args.verbose,
        json=args.json,
        cache_dir=args.cache_dir,
        tensorrt_module=args.tensorrt_module,
        progress=args.progress,
        force=args.force,
        given=given,
    )


def chw(request: ConvertRequest) -> Optional[Tuple[int, int, int]]:
    """-d as (channels, height, width), whatever order -i gave it in.

    Raises:
        ConfigError: -d has not three dimensions, or -i is ``nc`` (not an image input).
    """
    if request.dims is None:
        return None
    if request.input_order == "nc":
        raise ConfigError(
            "-i nc: edged builds image models (N x C x H x W); nc inputs are not images"
        )
    if len(request.dims) != 3:
        raise ConfigError(
            "-d {}: expected three dimensions ({})".format(
                ",".join(map(str, request.dims)),
                "C,H,W" if request.input_order == "nchw" else "H,W,C",
            )
        )
    if request.input_order == "nhwc":
        h, w, c = request.dims
    else:
        c, h, w = request.dims
    return c, h, w


class Capabilities(NamedTuple):
    """What the TensorRT at hand can do, as far as the flags care."""

    module: str  # e.g. "tensorrt_rtx 1.7.1"
    strongly_typed: bool
    int8: bool
    int8_calibrator: bool
    uff: bool
    dla_cores: int  # 0 when the API has no DLA or the platform none
    strict_flag: bool


def refusals(request: ConvertRequest, model_format: str, caps: Capabilities) -> List[str]:
    """One line per flag this TensorRT and model cannot honour (empty: all can be).

    Each line starts with the flag, so the user sees which one to drop or change.
    """
    out = []  # type: List[str]
    uff = model_format == "uff"
    if uff and not caps.uff:
        out.append(
            f"MODEL: a UFF .etlt needs TensorRT 8.6 or older (UffParser); {caps.module} has none "
            "-- use the model's ONNX release"
        )
    if uff and request.dims is None:
        out.append("-d: a UFF model needs its input dimensions, e.g. -d 3,544,960")
    if request.input_order != "nchw" and not uff:
        out.append(f"-i {request.input_order}: applies to UFF models; an ONNX model's input "
                   "order is in the graph")  # fmt: skip
    if request.profiles and uff:
        out.append("-p: optimization profiles apply to ONNX models (UFF is implicit batch)")
    if request.precision == "int8":
        if caps.strongly_typed or not caps.int8:
            out.append(
                f"-t int8: {caps.module} has no INT8 builder flag (a strongly typed builder "
                "builds the model's own types: export a quantized, Q/DQ ONNX model instead)"
            )
        elif not caps.int8_calibrator:
            out.append(f"-t int8: {caps.module} has no INT8 calibrator API")
        elif not request.calibration_cache:
            out.append("-t int8: needs the model's calibration cache, -c FILE")
    elif request.calibration_cache:
        out.append(f"-c: a calibration cache is used only with -t int8 (not {request.precision})")
    if request.strict_types and not caps.strongly_typed and not caps.strict_flag:
        out.append(f"-s: {caps.module} has no strict-types builder flag")
    if request.dla_core >= 0 and request.dla_core >= caps.dla_cores:
        out.append(
            f"-u {request.dla_core}: this platform has {caps.dla_cores} DLA core(s) "
            f"({caps.module}); DLA cores exist on Xavier and Orin, use -u -1 for the GPU"
        )
    return out


def build_options(request: ConvertRequest, model_format: str, input_name: str = "") -> BuildOptions:
    """The :class:`BuildOptions` a checked request asks for (see docs/convert.md)."""
    shape = chw(request)
    height = width = None  # type: Optional[int]
    if shape is not None:
        if shape[0] != 3:
            raise ConfigError(f"-d: {shape[0]} channels; edged builds 3-channel image models")
        height, width = shape[1], shape[2]
    profiles = dict(request.profiles)
    return BuildOptions(
        precision=request.precision,
        # tao-converter builds fp32 layers where fp16 has no kernel and says nothing; edged
        # builds what it can and reports the precision obtained. INT8 never falls back:
        # refusals() already checked that it can be built.
        precision_fallback=request.precision != "int8",
        workspace_bytes=request.workspace_bytes,
        dla_core=request.dla_core if request.dla_core >= 0 else None,
        gpu_fallback=True,  # tao-converter -u: layers DLA cannot run stay on the GPU
        max_batch=request.max_batch,
        profiles=profiles,
        input_width=width,
        input_height=height,
        output_names=request.outputs if model_format == "uff" else (),
        calibration_cache=request.calibration_cache,
        calibration_batch_size=request.calibration_batch,
        strict_types=request.strict_types,
    )

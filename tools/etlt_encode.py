"""Encrypt a plain model into a TAO ``.etlt`` file (the format NVIDIA's tools read).

    PYTHONPATH=. python tools/etlt_encode.py --key tlt_encode model.onnx model.etlt
    PYTHONPATH=. python tools/etlt_encode.py --key K --input-name input_1 model.uff model.etlt

An empty input name (the default) marks an ONNX payload, a non-empty one a
UFF payload (NVIDIA/tao_deploy ``utils/decoding.py``). The key is read from the command line for
reproducible builds of demo models; it is not printed.
"""

import argparse
import sys
from typing import List, Optional

from edged.etlt import ONNX, UFF, decode_etlt, encode_etlt, payload_looks_valid


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--key", required=True, help="model key, e.g. tlt_encode")
    parser.add_argument(
        "--input-name", default="", help="UFF input node name; leave empty for an ONNX payload"
    )
    parser.add_argument("model", help="plain .onnx (or .uff) file")
    parser.add_argument("output", help=".etlt file to write")
    args = parser.parse_args(argv)

    with open(args.model, "rb") as f:
        payload = f.read()
    fmt = UFF if args.input_name else ONNX
    if not payload_looks_valid(payload, fmt):
        print(f"{args.model}: not a valid {fmt.upper()} model", file=sys.stderr)
        return 2
    blob = encode_etlt(payload, args.key, args.input_name)
    # Round-trip before writing: a broken .etlt must never leave this tool.
    if decode_etlt(blob, args.key, args.output).data != payload:
        print(f"{args.output}: round trip failed", file=sys.stderr)
        return 1
    with open(args.output, "wb") as f:
        f.write(blob)
    print(f"{args.output}: {len(blob)} bytes ({fmt} payload, {len(payload)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

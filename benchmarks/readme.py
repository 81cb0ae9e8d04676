"""Copies a benchmark run's table into README.md: ``python -m benchmarks.readme [DIR]``.

The README's "Benchmarks" section holds the full suite's table unchanged: the line naming the
commit measured, whether the tree was clean and the run's verdict, then the table's rows
(tests/test_readme_benchmarks.py checks that they equal ``results.md``'s). This command
writes ``DIR/results.md`` again from ``DIR/results.json`` (the figures and verdicts the run
recorded; the plots are not redrawn) and replaces the README's block with its block, leaving
every other line as it is. ``--check`` only says whether the README already holds it.
"""

import argparse
import json
import os
import sys
from typing import List, Optional, Tuple

from . import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def block_span(lines: List[str]) -> Tuple[int, int]:
    """``[start, end)`` of the run line, the blank line, the header and the table's rows."""
    header = lines.index(report.HEADER)
    start = header - 2
    if start < 0 or not lines[start].startswith("Run: "):
        raise ValueError("no 'Run: ...' line two lines above the benchmark table")
    end = header + 1
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return start, end


def replace_block(readme: str, results_md: str) -> str:
    """``readme`` with its benchmark block replaced by the one of ``results_md`` (pure)."""
    lines, written = readme.split("\n"), results_md.split("\n")
    if lines.count(report.HEADER) != 1:
        raise ValueError("README.md must hold exactly one benchmark table")
    start, end = block_span(lines)
    new_start, new_end = block_span(written)
    return "\n".join(lines[:start] + written[new_start:new_end] + lines[end:])


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.readme", description=__doc__)
    p.add_argument(
        "results",
        nargs="?",
        default=os.path.join(REPO, "benchmarks", "results"),
        help="a results directory of `python -m benchmarks` (default: the committed one)",
    )
    p.add_argument("--readme", default=os.path.join(REPO, "README.md"))
    p.add_argument("--check", action="store_true", help="exit 1 if the README differs")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        with open(os.path.join(args.results, "results.json")) as f:
            results = json.load(f)
        with open(args.readme) as f:
            readme = f.read()
        written = report.markdown(results)
        updated = replace_block(readme, written)
    except (OSError, ValueError, KeyError) as e:
        sys.stderr.write(f"benchmarks.readme: {type(e).__name__}: {e}\n")
        return 2
    if args.check:
        same = updated == readme
        sys.stdout.write("README table is up to date\n" if same else "README table differs\n")
        return 0 if same else 1
    with open(os.path.join(args.results, "results.md"), "w") as f:
        f.write(written)
    with open(args.readme, "w") as f:
        f.write(updated)
    commit = (results.get("git") or {}).get("commit")
    sys.stdout.write(f"{args.readme}: the table of {args.results} (commit {commit})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The README's benchmark table is the one the full suite wrote (one
command reproduces the table; the numbers in the README came from it), with the line above it
that names the commit it measured and the run's verdict (benchmarks/validity.py)."""

import json
import os

from .conftest import REPO

HEADER = "| benchmark | figure | measured | goal | | run |"


def table_after_header(text):
    """The run line (commit, verdict), the blank line and the table's rows."""
    lines = text.splitlines()
    start = lines.index(HEADER) - 2
    assert lines[start].startswith("Run: commit "), lines[start]
    rows = []
    for i, line in enumerate(lines[start:]):
        if i > 1 and not line.startswith("|"):
            break
        rows.append(line)
    return rows


def test_readme_table_is_the_committed_full_run():
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    results_dir = os.path.join(REPO, "benchmarks", "results")
    with open(os.path.join(results_dir, "results.md")) as f:
        written = f.read()
    with open(os.path.join(results_dir, "results.json")) as f:
        results = json.load(f)
    assert readme.count(HEADER) == 1, "one benchmark table in the README"
    assert table_after_header(readme) == table_after_header(written)
    # the run line names the commit results.json recorded
    commit = results["git"]["commit"]
    assert table_after_header(readme)[0].startswith(f"Run: commit `{commit[:12]}` (")
    # the full suite with its defaults, not a shortened or partial run
    assert results["command"] == "python -m benchmarks"
    assert results["settings"]["quick"] is False
    assert results["settings"]["repeats"] == 5
    assert results["ran"] == ["memory", "pipeline", "offload", "cost", "mqtt", "startup", "profile"]

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


def test_one_command_copies_a_results_dir_into_the_readme(tmp_path):
    """`python -m benchmarks.readme DIR` renders DIR's results.md from its results.json and
    puts its run line and table into the README, every other line unchanged."""
    from benchmarks import readme as readme_tool

    results_dir = tmp_path / "results"
    results_dir.mkdir()
    with open(os.path.join(REPO, "benchmarks", "results", "results.json")) as f:
        results = json.load(f)
    results["git"] = {"commit": "fedcba9876543210" * 2 + "fedcba98", "clean": False,
                      "changed": [" M edged/daemon.py"]}  # fmt: skip
    (results_dir / "results.json").write_text(json.dumps(results))
    readme_path = tmp_path / "README.md"
    with open(os.path.join(REPO, "README.md")) as f:
        original = f.read()
    readme_path.write_text(original)
    args = [str(results_dir), "--readme", str(readme_path)]

    assert readme_tool.main(args + ["--check"]) == 1
    assert readme_tool.main(args) == 0
    updated = readme_path.read_text()
    block = table_after_header(updated)
    assert block == table_after_header((results_dir / "results.md").read_text())
    assert block[0].startswith("Run: commit `fedcba987654` (uncommitted changes); ")
    start = original.splitlines().index(table_after_header(original)[0])
    assert updated.splitlines()[:start] == original.splitlines()[:start]
    assert (
        updated.splitlines()[start + len(block) :]
        == original.splitlines()[start + len(table_after_header(original)) :]
    )
    assert readme_tool.main(args + ["--check"]) == 0
    assert readme_tool.main([str(tmp_path / "missing"), "--readme", str(readme_path)]) == 2

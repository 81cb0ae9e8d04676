#!/usr/bin/env python3
"""Container HEALTHCHECK for edged (Dockerfile.l4t): healthy while the watchdog says so.

Inside a container there is no systemd watchdog, so `edged run` writes the same
progress verdict (edged/watchdog.py, every probe fresh or not) to the file named
by $EDGED_HEALTH_FILE every few seconds. This script exits 0 when that file is
fresh and says healthy, 1 otherwise, printing one line for `docker inspect`.
A file that stops being rewritten means the watchdog thread itself is stuck.

Standard library only and Python 3.6-compatible: it runs on the image's
system python3 without importing edged (a health check must not load models).

Usage: healthcheck.py [--file PATH] [--max-age SECONDS]
"""

import argparse
import json
import os
import sys
import time
from typing import List, Optional, Tuple

DEFAULT_FILE = "/run/edged/health"
# Several watchdog ticks (5 s each) may pass between rewrites under load.
DEFAULT_MAX_AGE_S = 30.0

HEALTHY = 0
UNHEALTHY = 1


def evaluate(path: str, max_age_s: float, now: float) -> Tuple[int, str]:
    """The exit code and a one-line reason for the health file at ``path``."""
    try:
        with open(path) as f:
            report = json.load(f)
    except FileNotFoundError:
        return UNHEALTHY, f"no health file {path} (edged not running, or still starting)"
    except (OSError, ValueError) as e:
        return UNHEALTHY, f"cannot read health file {path}: {e}"
    if not isinstance(report, dict):
        return UNHEALTHY, f"health file {path} is not a JSON object"
    written_at = report.get("written_at")
    if not isinstance(written_at, (int, float)):
        return UNHEALTHY, f"health file {path} has no written_at time"
    age = now - written_at
    if age > max_age_s:
        return UNHEALTHY, f"health file is {age:.0f} s old (limit {max_age_s:.0f} s): edged is hung"
    status = report.get("status") or ""
    if report.get("healthy") is not True:
        stale = ", ".join(str(name) for name in report.get("stale") or []) or "unknown"
        return UNHEALTHY, f"stalled: {stale} {status}"
    return HEALTHY, f"ok: {status}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", default=os.environ.get("EDGED_HEALTH_FILE", DEFAULT_FILE))
    parser.add_argument("--max-age", type=float, default=DEFAULT_MAX_AGE_S)
    args = parser.parse_args(argv)
    code, reason = evaluate(args.file, args.max_age, time.time())
    sys.stdout.write(reason.strip() + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())

"""6, hostile configs: how long ``parse_config`` takes to refuse each known hostile config of
the fuzz set (tests/test_fuzz_inputs.py ``hostile_configs``): deep nesting, alias bombs, huge
numbers, unhashable keys. Opt-in (``--only config``): not part of the default full run.

The goal is milliseconds on every interpreter edged supports (3.6, 3.8, 3.11), at most 100 ms
per config: a config is read at start-up and on every reload, and a hostile one must not stall
either. The slowest is the one whose cost follows its size (a 100 kB key: PyYAML's pure-Python
scanner reads about 2 MB/s on 3.6), not its structure; deep nesting took 1.7-3.1 s on 3.6
before it was refused while scanning (edged/config/yamlfile.py).
"""

import time
from typing import Any, Dict

from .common import median

#: Repeats per config (each timed alone; the figure is the median of its repeats).
REPEATS = {False: 20, True: 2}


def run_hostile_configs(quick: bool) -> Dict[str, Any]:
    """Per config: the median seconds to refuse it; accepted ones are listed (must be none)."""
    from edged.config import parse_config
    from edged.errors import ConfigError
    from tests.test_fuzz_inputs import hostile_configs

    configs = hostile_configs()
    per_config = {}  # type: Dict[str, float]
    accepted = []
    for name, text in sorted(configs.items()):
        times = []
        for _ in range(REPEATS[quick]):
            started = time.perf_counter()
            try:
                parse_config(text)
                refused = False
            except ConfigError:
                refused = True
            times.append(time.perf_counter() - started)
        if not refused:
            accepted.append(name)
        per_config[name] = median(times)
    slowest = max(per_config, key=per_config.__getitem__)
    return {
        "repeats": REPEATS[quick],
        "median_s": per_config,
        "slowest": slowest,
        "slowest_s": per_config[slowest],
        "total_s": sum(per_config.values()),
        "accepted": accepted,
    }

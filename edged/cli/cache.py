"""``edged cache list | verify | prune``: inspect and tidy the engine cache.

* ``list``: every entry with its model, precision requested -> obtained, device, TensorRT,
  GPU, size, last use, and whether it fits this machine (``ok``, ``stale`` = built for another
  TensorRT/CUDA/GPU, ``broken``).
* ``verify``: also re-hashes every engine; exit 1 if an entry is broken (``--quarantine``
  moves broken ones aside).
* ``prune``: removes leftovers of interrupted builds, quarantined and broken entries,
  entries built for another environment (unless ``--keep-stale``), then the least recently
  used entries beyond the size cap.

The cache directory comes from ``--cache-dir``, else ``--config``'s ``engine.cache_dir``,
else the default (``$CACHE_DIRECTORY/engines`` or ``~/.cache/edged/engines``).
"""

import argparse
import json
import logging
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from ..errors import EdgedError

logger = logging.getLogger(__name__)

OK, STALE, BROKEN, UNKNOWN = "ok", "stale", "broken", "unknown"


def add_parser(commands: "argparse._SubParsersAction") -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", metavar="DIR", help="the engine cache directory")
    common.add_argument("--config", metavar="FILE", help="take engine.cache_dir from this config")
    common.add_argument(
        "--tensorrt-module",
        metavar="NAME",
        help="TensorRT module to compare environments with (default: auto)",
    )
    p = commands.add_parser("cache", help="list, verify or prune the TensorRT engine cache")
    sub = p.add_subparsers(dest="cache_command", metavar="ACTION")
    sub.required = True
    ls = sub.add_parser("list", parents=[common], help="list cached engines")
    ls.add_argument("--json", action="store_true", help="one JSON object per entry")
    ls.set_defaults(run=run_list)
    verify = sub.add_parser(
        "verify",
        parents=[common],
        help="check every manifest and engine hash; exit 1 if one is broken",
    )
    verify.add_argument("--quarantine", action="store_true", help="move broken entries aside")
    verify.add_argument("--json", action="store_true", help="one JSON object per entry")
    verify.set_defaults(run=run_verify)
    prune = sub.add_parser(
        "prune",
        parents=[common],
        help="remove leftovers, broken and stale entries, then LRU to the cap",
    )
    prune.add_argument(
        "--max-mb", type=int, metavar="MIB", help="size cap (default: engine.cache_max_mb)"
    )
    prune.add_argument(
        "--keep-stale", action="store_true", help="keep entries built for another TensorRT/CUDA/GPU"
    )
    prune.add_argument("--dry-run", action="store_true", help="only say what would go")
    prune.set_defaults(run=run_prune)


def _open(args: argparse.Namespace) -> Tuple[Any, Any]:
    """(EngineCache, EngineConfig)."""
    from ..config import EngineConfig, load_config
    from ..engine.cache import EngineCache, default_cache_dir

    engine = load_config(args.config).engine if args.config else EngineConfig()
    root = args.cache_dir or engine.cache_dir or default_cache_dir()
    return EngineCache(root, int(engine.cache_max_mb) << 20), engine


def _live_environment(args: argparse.Namespace, engine: Any) -> Optional[Dict[str, str]]:
    """This machine's environment, or None when no TensorRT imports here."""
    from ..backends.tensorrt_api import import_tensorrt
    from ..engine.platform import LivePlatform

    try:
        trt = import_tensorrt(args.tensorrt_module or engine.tensorrt_module)
    except EdgedError as e:
        logger.warning("cannot tell stale entries apart: %s", e)
        return None
    return LivePlatform()(trt).as_dict()


def _classify(
    cache: Any, state: Any, environment: Optional[Dict[str, str]], check_engine: bool
) -> Tuple[str, str]:
    if state.problem is not None:
        return BROKEN, state.problem
    _, problem = cache.validate(state.path, check_engine=check_engine)
    if problem is not None:
        return BROKEN, problem
    if environment is None:
        return UNKNOWN, "no TensorRT here to compare with"
    _, problem = cache.validate(state.path, environment=environment, check_engine=False)
    if problem is not None:
        return STALE, problem
    return OK, ""


def _row(state: Any, status: str, why: str) -> Dict[str, Any]:
    m = state.manifest or {}
    env = (m.get("inputs") or {}).get("environment") or {}
    return {
        "name": state.name,
        "path": state.path,
        "status": status,
        "problem": why,
        "model": m.get("model_name"),
        "model_path": m.get("model_path"),
        "precision_requested": m.get("precision_requested"),
        "precision_obtained": m.get("precision_obtained"),
        "device": m.get("device_obtained"),
        "tensorrt": "{} {}".format(
            env.get("tensorrt_module", "?"), env.get("tensorrt_version", "?")
        ),
        "gpu": "{} (sm {})".format(env.get("gpu_name", "?"), env.get("compute_capability", "?")),
        "bytes": state.size_bytes,
        "built_at": m.get("built_at"),
        "build_seconds": m.get("build_seconds"),
        "last_used": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.last_used)),
    }


def _print_rows(rows: List[Dict[str, Any]], as_json: bool, root: str) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return
    if not rows:
        print(f"{root}: no engines")
        return
    for row in rows:
        print("{name}  {status}".format(**row))
        print("    model {model} ({model_path})".format(**row))
        print(
            "    {precision_requested} -> {precision_obtained} on {device}; {tensorrt}; "
            "{gpu}".format(**row)
        )
        print(
            "    {:.1f} MiB, built {} in {} s, last used {}".format(
                row["bytes"] / 1048576.0, row["built_at"], row["build_seconds"], row["last_used"]
            )
        )
        if row["problem"]:
            print("    {}".format(row["problem"]))
    total = sum(r["bytes"] for r in rows)
    print(
        "{}: {} engine{}, {:.1f} MiB".format(
            root, len(rows), "" if len(rows) == 1 else "s", total / 1048576.0
        )
    )


def run_list(args: argparse.Namespace) -> int:
    cache, engine = _open(args)
    environment = _live_environment(args, engine)
    rows = [_row(s, *_classify(cache, s, environment, False)) for s in cache.entries()]
    _print_rows(rows, args.json, cache.root)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    cache, engine = _open(args)
    environment = _live_environment(args, engine)
    rows = []
    broken = 0
    for state in cache.entries():
        status, why = _classify(cache, state, environment, True)
        rows.append(_row(state, status, why))
        if status == BROKEN:
            broken += 1
            if args.quarantine:
                _quarantine(cache, state, why)
    _print_rows(rows, args.json, cache.root)
    if broken:
        print(
            "{} broken entr{}{}".format(
                broken, "y" if broken == 1 else "ies", " (quarantined)" if args.quarantine else ""
            ),
            file=sys.stderr,
        )
    return 1 if broken else 0


def _quarantine(cache: Any, state: Any, why: str) -> None:
    fp = str((state.manifest or {}).get("fingerprint", ""))
    try:
        lock = cache.lock(fp)
    except EdgedError:
        cache.quarantine(state.name, why)  # no usable fingerprint: no lock to respect
        return
    if lock.acquire(blocking=False):
        try:
            cache.quarantine(state.name, why)
        finally:
            lock.release()


def run_prune(args: argparse.Namespace) -> int:
    cache, engine = _open(args)
    environment = None if args.keep_stale else _live_environment(args, engine)
    cap = (args.max_mb << 20) if args.max_mb is not None else cache.max_bytes
    removed = []  # type: List[str]
    if args.dry_run:
        removed += ["tmp/" + n for n in cache.leftovers()]
        removed += ["quarantine/" + n for n in cache.quarantined()]
    else:
        removed += ["tmp/" + n for n in cache.clean_tmp()]
        count = len(cache.quarantined())
        cache.clear_quarantine()
        removed += [f"quarantine/ ({count} entries)"] if count else []
    for state in cache.entries():
        status, why = _classify(cache, state, environment, False)
        if status in (BROKEN, STALE):
            if not args.dry_run:
                cache.remove(state.name)
            removed.append(f"{state.name} ({status}: {why})")
    if cap > 0:
        if args.dry_run:
            removed += [f"{n} (least recently used)" for n in _would_evict(cache, cap)]
        else:
            removed += [f"{n} (least recently used)" for n in cache.evict(cap)]
    verb = "would remove" if args.dry_run else "removed"
    for item in removed:
        print(f"{verb} {item}")
    print(
        "{}: {} {} item{}; {:.1f} MiB in use".format(
            cache.root,
            verb,
            len(removed),
            "" if len(removed) == 1 else "s",
            cache.total_bytes() / 1048576.0,
        )
    )
    return 0


def _would_evict(cache: Any, cap: int) -> List[str]:
    states = sorted(cache.entries(), key=lambda s: s.last_used)
    total = sum(s.size_bytes for s in states)
    out = []
    for state in states:
        if total <= cap:
            break
        total -= state.size_bytes
        out.append(state.name)
    return out

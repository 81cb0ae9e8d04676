"""Runs that flag themselves: machine load around every window, physical ceilings, the commit.

A figure taken on a busy machine is not a figure of edged: the runtime limit collapses
under contention while edged's pipelined threads do not, so "edged / runtime limit" can
read above 1 and "met" on a loaded machine. So every measured window is bracketed by a
:class:`Probe` snapshot (load average, ``/proc/stat`` CPU ticks with steal, the CPU ticks
of this benchmark's own process tree), and a window, a benchmark or the whole run is
**invalid** when, over it:

* the run queue beyond the benchmark's own runnable threads (``/proc/loadavg``'s running
  tasks minus this process tree's threads in state R, the mean of the two snapshots) exceeds
  ``MAX_FOREIGN_RUNNABLE_PER_CORE`` x cores. The load average itself (recorded before and
  after every window) is a one-minute mean of the run queue that counts the benchmark's own
  threads -- 8 naive processes alone make it 16 -- so only the whole run is judged by it, at
  its start, before the benchmark runs anything (``MAX_LOAD1_AT_START_PER_CORE``);
* the hypervisor stole more than ``MAX_STEAL_PCT`` % of the CPU time (``steal`` in
  ``/proc/stat``, proc(5));
* other processes (not this benchmark nor its children: edged, the naive loops, the
  broker) used more than ``MAX_OTHERS_CPU_PCT`` % of the machine's CPU time: the direct,
  per-window measure of "someone else was running";
* a ratio exceeds its physical ceiling (:func:`ceiling_violations`): edged cannot be faster
  than the runtime alone on the same batch.

Results also carry the git commit they measured and whether the tree was clean.
The checks are pure functions over recorded figures, tested as data
(tests/test_benchmarks_validity.py).
"""

import contextlib
import os
import subprocess
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

#: Runnable tasks beyond the benchmark's own threads, per core, above which a window is invalid.
MAX_FOREIGN_RUNNABLE_PER_CORE = 0.5
#: 1-minute load average at the start of a run, per core, above which the run is invalid.
MAX_LOAD1_AT_START_PER_CORE = 0.5
#: CPU time stolen by the hypervisor (% of all CPU time) above which a window is invalid.
MAX_STEAL_PCT = 2.0
#: CPU time of processes other than the benchmark's own (% of all CPU time) above which a
#: window is invalid (a quiet machine's daemons use well under 5 %).
MAX_OTHERS_CPU_PCT = 10.0
#: A ratio may exceed its ceiling by this much before it counts as impossible (rounding of
#: window edges: a window holds whole frames).
CEILING_TOLERANCE = 0.02
#: Physical ceilings: (numerator, denominator) pairs of contenders where the numerator runs
#: the denominator's work and more, so numerator / denominator <= 1 on a valid run.
CEILINGS = (
    ("edged", "runtime"),
    ("edged_serial", "runtime"),
    ("naive", "runtime"),
    ("edged", "runtime_nospin"),
    ("edged_serial", "runtime_nospin"),
)

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_ticks() -> Tuple[int, int, int, int]:
    """(all, idle incl. iowait, steal, irq + softirq) CPU ticks of the machine since boot,
    from /proc/stat."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    # cpu user nice system idle iowait irq softirq steal guest guest_nice; guest time is
    # already inside user/nice (proc(5)), so it is not added twice
    values = [int(v) for v in fields[1:]]
    values += [0] * (10 - len(values))
    total = sum(values[:8])
    return total, values[3] + values[4], values[7], values[5] + values[6]


def _children() -> Dict[int, List[int]]:
    tree = {}  # type: Dict[int, List[int]]
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # exited meanwhile
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(name))
    return tree


def _process_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime of ``pid`` (its threads and its reaped children)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0
    rest = stat[stat.rindex(")") + 2 :].split()
    return sum(int(v) for v in rest[11:15])  # fields 14-17 of proc(5)


def _tree(root: int) -> List[int]:
    """``root`` and its live descendants."""
    children = _children()
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return pids


def own_ticks(root: Optional[int] = None) -> int:
    """CPU ticks of ``root`` (default: this process) and all its live descendants."""
    return sum(_process_ticks(pid) for pid in _tree(os.getpid() if root is None else root))


def _running_threads(pid: int) -> int:
    count = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        count += stat[stat.rindex(")") + 2 :].startswith("R")
    return count


def run_queue() -> int:
    """Tasks running or runnable on the machine now (``/proc/loadavg``'s 4th field, proc(5))."""
    with open("/proc/loadavg") as f:
        return int(f.read().split()[3].split("/")[0])


def snapshot() -> Dict[str, Any]:
    """Load average, run queue, machine CPU ticks and this benchmark's own ticks, now."""
    running = run_queue()
    pids = _tree(os.getpid())
    own_running = sum(_running_threads(pid) for pid in pids)
    total, idle, steal, irq = cpu_ticks()
    return {
        "wall": time.time(),
        "mono": time.monotonic(),
        "loadavg": list(os.getloadavg()),
        "running": running,
        "own_running": own_running,
        "cpu_total": total,
        "cpu_idle": idle,
        "cpu_irq": irq,
        "cpu_steal": steal,
        "own": sum(_process_ticks(pid) for pid in pids),
    }


def interval(before: Dict[str, Any], after: Dict[str, Any],
             cores: Optional[int] = None) -> Dict[str, Any]:  # fmt: skip
    """What happened on the machine between two snapshots (pure)."""
    cores = cores or os.cpu_count() or 1
    total = max(1, after["cpu_total"] - before["cpu_total"])
    busy = total - (after["cpu_idle"] - before["cpu_idle"])
    steal = after["cpu_steal"] - before["cpu_steal"]
    # interrupts (the loopback MQTT traffic's softirqs among them) belong to no process
    irq = after.get("cpu_irq", 0) - before.get("cpu_irq", 0)
    own = after["own"] - before["own"]
    elapsed = max(1e-9, after["mono"] - before["mono"])
    own_cores = own / float(_CLK_TCK) / elapsed
    foreign = [max(0, x["running"] - x["own_running"]) for x in (before, after)]
    return {
        "seconds": elapsed,
        "cores": cores,
        "load1_before": before["loadavg"][0],
        "load1_after": after["loadavg"][0],
        "own_cores": own_cores,
        "foreign_runnable": sum(foreign) / 2.0,
        "steal_pct": 100.0 * steal / total,
        # busy ticks that are neither ours, nor stolen (counted apart), nor interrupts
        "others_cpu_pct": max(0.0, 100.0 * (busy - steal - irq - own) / total),
    }


def load_flags(load: Dict[str, Any]) -> List[str]:
    """Why an interval's machine load makes its figures invalid ([] = quiet enough) (pure)."""
    flags = []
    limit = MAX_FOREIGN_RUNNABLE_PER_CORE * load["cores"]
    if load["foreign_runnable"] > limit:
        flags.append("load: {:.1f} runnable tasks not ours > {:.1f}".format(
            load["foreign_runnable"], limit))  # fmt: skip
    if load["steal_pct"] > MAX_STEAL_PCT:
        flags.append("steal {:.1f} % > {:.0f} %".format(load["steal_pct"], MAX_STEAL_PCT))
    if load["others_cpu_pct"] > MAX_OTHERS_CPU_PCT:
        flags.append("others' CPU {:.0f} % > {:.0f} %".format(
            load["others_cpu_pct"], MAX_OTHERS_CPU_PCT))  # fmt: skip
    return flags


def start_flags(start: Dict[str, Any], cores: Optional[int] = None) -> List[str]:
    """Whether the machine was busy when the run began (its load average, before any of
    the benchmark's own work could raise it) (pure)."""
    cores = cores or os.cpu_count() or 1
    limit = MAX_LOAD1_AT_START_PER_CORE * cores
    load1 = start["loadavg"][0]
    return [f"load1 {load1:.1f} at the start > {limit:.1f}"] if load1 > limit else []


def ceiling_violations(figures: Dict[str, float],
                       ceilings: Sequence[Tuple[str, str]] = CEILINGS) -> List[str]:  # fmt: skip
    """Ratios above their physical ceiling in one set of figures (pure): ``[]`` when none."""
    flags = []
    for num, den in ceilings:
        a, b = figures.get(num), figures.get(den)
        if a is None or b is None or not b > 0:
            continue
        if a / b > 1.0 + CEILING_TOLERANCE:
            flags.append(f"{num} / {den} = {a / b:.2f} > 1 (impossible)")
    return flags


def flag_reason(flag: str) -> str:
    """The short reason of a flag: ``load``, ``steal``, ``others' CPU`` or ``above ceiling``."""
    if flag.startswith("others'"):
        return "others' CPU"
    if "impossible" in flag:
        return "above ceiling"
    return flag.split(" ")[0].rstrip(":")


def reasons(verdict: Dict[str, Any]) -> List[str]:
    """The distinct short reasons behind a benchmark's verdict, in order of appearance."""
    found = []  # type: List[str]
    flags = [f for w in verdict.get("windows", []) for f in w["flags"]]
    for flag in flags + [f for f in verdict["flags"] if "impossible" in f]:
        if flag_reason(flag) not in found:
            found.append(flag_reason(flag))
    return found


class Probe:
    """Brackets measured windows with snapshots; collects every window's load and flags."""

    def __init__(self) -> None:
        self.windows = []  # type: List[Dict[str, Any]]

    @contextlib.contextmanager
    def measuring(self, name: str) -> Iterator[None]:
        """Brackets the measured part of one window (not its start-up or warm-up)."""
        before = snapshot()
        yield
        self.record(name, before, snapshot())

    def record(self, name: str, before: Dict[str, Any], after: Dict[str, Any]) -> Dict[str, Any]:
        load = interval(before, after)
        entry = {"window": name, "load": load, "flags": load_flags(load)}
        self.windows.append(entry)
        return entry

    def summary(self, extra_flags: Sequence[str] = ()) -> Dict[str, Any]:
        """The benchmark's verdict: invalid if any window was, or a ceiling was exceeded."""
        flagged = [w for w in self.windows if w["flags"]]
        why = reasons({"windows": flagged, "flags": []})
        flags = list(extra_flags)
        if flagged:
            flags.append("{} of {} windows under load ({})".format(
                len(flagged), len(self.windows), ", ".join(why)))  # fmt: skip
        return {"valid": not flags, "flags": flags, "windows": self.windows}


def interleaved(contenders: Sequence[Tuple[str, Callable[[], Any]]],
                repeats: int) -> List[Dict[str, Any]]:  # fmt: skip
    """Each contender's window in turn, repeat after repeat (A B C, B C A, C A B, ...).

    Window by window, so a machine that drifts (another job starting, thermal limits) hits
    every contender alike; the start rotates so no contender always follows the same one.
    Returns one ``{name: value}`` per repeat.
    """
    runs = []
    n = len(contenders)
    for r in range(repeats):
        order = list(contenders[r % n :]) + list(contenders[: r % n])
        runs.append({name: measure() for name, measure in order})
    return runs


def verdict(windows: Sequence[Dict[str, Any]], figures: Sequence[Dict[str, float]],
            ceilings: Sequence[Tuple[str, str]] = CEILINGS) -> Dict[str, Any]:  # fmt: skip
    """Validity of a benchmark from its windows' load flags and its per-repeat figures (pure)."""
    probe = Probe()
    probe.windows = list(windows)
    over = []  # type: List[str]
    for i, run in enumerate(figures):
        over += [f"repeat {i + 1}: {v}" for v in ceiling_violations(run, ceilings)]
    return probe.summary(over)


def git_state(repo: str) -> Dict[str, Any]:
    """The commit the run measured and whether the tree was clean (``git status --porcelain``)."""
    try:
        commit = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=repo,
                                         stderr=subprocess.DEVNULL)  # fmt: skip
        status = subprocess.check_output(["git", "status", "--porcelain"], cwd=repo,
                                         stderr=subprocess.DEVNULL)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "clean": None, "changed": []}
    changed = status.decode("utf-8", "replace").splitlines()
    return {"commit": commit.decode().strip(), "clean": not changed, "changed": changed[:20]}

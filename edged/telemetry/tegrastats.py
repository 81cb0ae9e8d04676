"""Parse one line of NVIDIA's ``tegrastats`` into a :class:`JetsonStats`.

The line's layout differs by JetPack and board, so every field is found by its
own shape, never by position (recorded samples and their sources are in
``tests/data/tegrastats/``):

* JetPack 4.6 (Nano, L4T R32): ``RAM 1923/3964MB (lfb 2x2MB) SWAP 191/1982MB (cached 6MB)
  IRAM 0/252kB(lfb 252kB) CPU [5%@1224,...] EMC_FREQ 0%@1600 GR3D_FREQ 0%@76 APE 25
  PLL@37C CPU@40C ... POM_5V_IN 1750/1628 POM_5V_GPU 0/0 POM_5V_CPU 366/406``:
  power rails in mW without a unit.
* JetPack 5.x (Xavier, L4T R35): a leading ``MM-DD-YYYY HH:MM:SS``, one GPU frequency per
  GPC in brackets (``GR3D_FREQ 0%@[114]``), rails with units (``VDD_IN 2763mW/2846mW``).
* Others seen in the wild: ``EMC_FREQ 0%`` without a frequency, ``off`` CPU cores, rails
  without a ``VDD_`` prefix (AGX Xavier: ``GPU 463/463 CPU 618/618 ... SYS5V 3306/3306``),
  ``-256C`` for a sensor that is powered off, lower-case zone names on newer releases.

Memory figures are MiB as tegrastats prints them (``/proc/meminfo`` kB / 1024).
Whatever is not recognised is skipped: a truncated or garbled line yields the
fields it does hold and never raises.
"""

import re
from dataclasses import dataclass, field
from typing import Dict, Optional

_UNIT_BYTES = {"k": 1024, "M": 1024**2, "G": 1024**3}

# "RAM 1923/3964MB" and "SWAP 191/1982MB"; \b keeps IRAM out.
_MEMORY = re.compile(r"\b(RAM|SWAP) +(\d+)/(\d+)([kMG])B")
# "CPU [5%@1224,4%@1224,off,off]"
_CPUS = re.compile(r"\bCPU +\[([^\]]*)\]")
_CORE = re.compile(r"^(\d+)%(?:@(\d+))?$")
# "GR3D_FREQ 0%@76", "GR3D_FREQ 0%@[114]", "GR3D_FREQ 0%@[0,0]", "EMC_FREQ 0%"
_ENGINE = re.compile(r"\b(GR3D_FREQ|EMC_FREQ) +(\d+)%(?:@\[?(\d+(?:,\d+)*)\]?)?")
# "PLL@37C", "thermal@31.35C", "CV0@-256C"; not "5%@1224" (a name starts with a letter)
_TEMPERATURE = re.compile(r"(?<![\w@%.,\[-])([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C\b")
# "POM_5V_IN 1750/1628" or "VDD_IN 2763mW/2846mW"; the lookarounds keep "RAM 1923/3964MB" out
_RAIL = re.compile(r"(?<![\w/])([A-Za-z][A-Za-z0-9_]*) +(\d+)(?:mW)?/(\d+)(?:mW)?(?![\w/])")

#: Readings at or below this are tegrastats' marker for a powered-off sensor (it prints -256C).
MIN_VALID_CELSIUS = -100.0


@dataclass(frozen=True)
class PowerRail:
    """One power rail: instantaneous and running-average power, milliwatts."""

    current_mw: float
    average_mw: float


@dataclass(frozen=True)
class JetsonStats:
    """What one tegrastats line said; None or empty where the line did not say it."""

    ram_used_bytes: Optional[int] = None
    ram_total_bytes: Optional[int] = None
    swap_used_bytes: Optional[int] = None
    swap_total_bytes: Optional[int] = None
    gpu_load_ratio: Optional[float] = None  # GR3D_FREQ: 0..1
    gpu_frequency_hz: Optional[float] = None  # the highest of the GPCs' clocks
    emc_load_ratio: Optional[float] = None  # EMC_FREQ: memory bandwidth used, 0..1
    emc_frequency_hz: Optional[float] = None
    cpu_load_ratio: Dict[int, float] = field(default_factory=dict)  # online cores only
    temperatures_c: Dict[str, float] = field(default_factory=dict)  # zone (lower case) -> C
    power: Dict[str, PowerRail] = field(default_factory=dict)  # rail as printed -> mW

    @property
    def empty(self) -> bool:
        """True when the line held nothing recognisable (not a tegrastats line)."""
        return self == JetsonStats()


def parse_line(line: str) -> JetsonStats:
    """Parse one tegrastats line; unknown or damaged parts are skipped, never raised."""
    values = {}  # type: Dict[str, object]
    for match in _MEMORY.finditer(line):
        kind = match.group(1).lower()
        unit = _UNIT_BYTES[match.group(4)]
        values.setdefault(kind + "_used_bytes", int(match.group(2)) * unit)
        values.setdefault(kind + "_total_bytes", int(match.group(3)) * unit)
    for match in _ENGINE.finditer(line):
        prefix = "gpu" if match.group(1) == "GR3D_FREQ" else "emc"
        values.setdefault(prefix + "_load_ratio", int(match.group(2)) / 100.0)
        if match.group(3):
            mhz = max(int(f) for f in match.group(3).split(","))
            values.setdefault(prefix + "_frequency_hz", mhz * 1e6)
    return JetsonStats(
        cpu_load_ratio=_cpu_loads(line),
        temperatures_c=_temperatures(line),
        power=_rails(line),
        **values,  # type: ignore
    )


def _cpu_loads(line: str) -> Dict[int, float]:
    match = _CPUS.search(line)
    loads = {}  # type: Dict[int, float]
    if match is None:
        return loads
    for index, core in enumerate(match.group(1).split(",")):
        found = _CORE.match(core.strip())
        if found:  # "off" (a parked core) and damaged entries are left out
            loads[index] = int(found.group(1)) / 100.0
    return loads


def _temperatures(line: str) -> Dict[str, float]:
    zones = {}  # type: Dict[str, float]
    for name, value in _TEMPERATURE.findall(line):
        celsius = float(value)
        if celsius > MIN_VALID_CELSIUS:
            # lower case: JetPack 6 prints "cpu@" where older releases print "CPU@"
            zones.setdefault(name.lower(), celsius)
    return zones


def _rails(line: str) -> Dict[str, PowerRail]:
    rails = {}  # type: Dict[str, PowerRail]
    for name, current, average in _RAIL.findall(line):
        # first one wins: some carrier boards print several unconnected "NC" channels
        rails.setdefault(name, PowerRail(float(current), float(average)))
    return rails

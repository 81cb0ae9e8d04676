"""Jetson telemetry as Prometheus gauges (names after Prometheus' naming guide: base units,
``_ratio``, ``_celsius``, labels instead of ids in names).

``jetson_gpu_load_ratio``, ``jetson_gpu_frequency_hertz``, ``jetson_emc_load_ratio``,
``jetson_emc_frequency_hertz``, ``jetson_cpu_load_ratio{core}``,
``jetson_temperature_celsius{zone}``, ``jetson_power_milliwatts{rail}`` (now) and
``jetson_power_average_milliwatts{rail}`` (tegrastats' running average),
``jetson_ram_used_bytes``, ``jetson_ram_total_bytes``, ``jetson_swap_used_bytes``,
``jetson_swap_total_bytes``. Each is exported only when the newest tegrastats
line held it, and none at all without a fresh line: on a machine that is not a
Jetson the family is simply absent.
"""

from typing import Callable, Iterator, List, Optional

from prometheus_client.core import GaugeMetricFamily, Metric

from ..telemetry.tegrastats import JetsonStats

_SCALARS = (
    (
        "gpu_load_ratio",
        "jetson_gpu_load_ratio",
        "GPU (GR3D) busy fraction at its current clock, 0..1.",
    ),
    ("gpu_frequency_hz", "jetson_gpu_frequency_hertz", "GPU clock (the highest GPC's)."),
    (
        "emc_load_ratio",
        "jetson_emc_load_ratio",
        "Memory controller (EMC) bandwidth used at its current clock, 0..1.",
    ),
    ("emc_frequency_hz", "jetson_emc_frequency_hertz", "Memory controller clock."),
    ("ram_used_bytes", "jetson_ram_used_bytes", "RAM in use (shared by CPU and GPU)."),
    ("ram_total_bytes", "jetson_ram_total_bytes", "RAM available to Linux."),
    ("swap_used_bytes", "jetson_swap_used_bytes", "Swap in use (zram and swap files)."),
    ("swap_total_bytes", "jetson_swap_total_bytes", "Swap configured."),
)


def jetson_families(stats: JetsonStats) -> List[Metric]:
    """The gauges for one snapshot (only the values it holds)."""
    families = []  # type: List[Metric]
    for attribute, name, doc in _SCALARS:
        value = getattr(stats, attribute)
        if value is not None:
            families.append(GaugeMetricFamily(name, doc, value=value))
    if stats.cpu_load_ratio:
        cpu = GaugeMetricFamily(
            "jetson_cpu_load_ratio",
            "Busy fraction of each online CPU core, 0..1 (parked cores are left out).",
            labels=["core"],
        )
        for core, load in sorted(stats.cpu_load_ratio.items()):
            cpu.add_metric([str(core)], load)
        families.append(cpu)
    if stats.temperatures_c:
        temps = GaugeMetricFamily(
            "jetson_temperature_celsius",
            "Thermal zone temperature (zone names as tegrastats prints them, lower case).",
            labels=["zone"],
        )
        for zone, celsius in sorted(stats.temperatures_c.items()):
            temps.add_metric([zone], celsius)
        families.append(temps)
    if stats.power:
        now = GaugeMetricFamily(
            "jetson_power_milliwatts",
            "Power drawn on each monitored rail (VDD_IN / POM_5V_IN is the whole module).",
            labels=["rail"],
        )
        average = GaugeMetricFamily(
            "jetson_power_average_milliwatts",
            "Power per rail averaged by tegrastats since it started.",
            labels=["rail"],
        )
        for rail, reading in sorted(stats.power.items()):
            now.add_metric([rail], reading.current_mw)
            average.add_metric([rail], reading.average_mw)
        families.extend([now, average])
    return families


class JetsonCollector:
    """Exports the newest snapshot from ``latest`` (e.g. ``TegrastatsReader.latest``)."""

    def __init__(self, latest: Callable[[], Optional[JetsonStats]]) -> None:
        self._latest = latest

    def collect(self) -> Iterator[Metric]:
        stats = self._latest()
        if stats is None:
            return iter([])
        return iter(jetson_families(stats))

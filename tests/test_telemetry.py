"""Jetson telemetry: the tegrastats parser on recorded lines of several JetPacks, damaged
lines, the reader thread with a replaying stand-in for tegrastats, and the not-a-Jetson path."""

import logging
import os
import random
import shutil
import stat
import subprocess
import threading

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edged.metrics.jetson import JetsonCollector, jetson_families
from edged.telemetry import JetsonStats, PowerRail, TegrastatsReader, find_tegrastats, parse_line
from edged.telemetry import reader as reader_module

from .conftest import REPO
from .helpers import wait_for

SAMPLES_DIR = os.path.join(REPO, "tests", "data", "tegrastats")
MIB = 1024 * 1024


@pytest.fixture
def promtool():
    """Prometheus's own checker; missing is a failure, not a skip."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found: install the Debian package `prometheus` "
            "(listed in tools/apt-packages.txt)"
        )
    return path


def sample_line(name):
    """The recorded line of ``tests/data/tegrastats/NAME.txt`` (comment lines skipped)."""
    with open(os.path.join(SAMPLES_DIR, name + ".txt")) as f:
        lines = [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")]
    assert len(lines) == 1, f"{name}: expected exactly one sample line"
    return lines[0]


def sample_names():
    return sorted(n[:-4] for n in os.listdir(SAMPLES_DIR) if n.endswith(".txt"))


def stats(ram, swap, cpu, emc, gpu, temps, power):
    """Expected values, written the way the line shows them: MiB, percent, MHz, mW."""
    return JetsonStats(
        ram_used_bytes=ram[0] * MIB,
        ram_total_bytes=ram[1] * MIB,
        swap_used_bytes=swap[0] * MIB,
        swap_total_bytes=swap[1] * MIB,
        emc_load_ratio=emc[0] / 100.0,
        emc_frequency_hz=None if emc[1] is None else emc[1] * 1e6,
        gpu_load_ratio=gpu[0] / 100.0,
        gpu_frequency_hz=None if gpu[1] is None else gpu[1] * 1e6,
        cpu_load_ratio={i: p / 100.0 for i, p in enumerate(cpu) if p is not None},
        temperatures_c=temps,
        power={rail: PowerRail(float(now), float(avg)) for rail, (now, avg) in power.items()},
    )


OFF = None  # a parked CPU core

EXPECTED = {
    "nano_jp461": stats(
        ram=(1923, 3964),
        swap=(191, 1982),
        cpu=[5, 4, 3, 6],
        emc=(0, 1600),
        gpu=(0, 76),
        temps={"pll": 37.0, "cpu": 40.0, "pmic": 50.0, "gpu": 40.0, "ao": 45.0, "thermal": 40.0},
        power={"POM_5V_IN": (1750, 1628), "POM_5V_GPU": (0, 0), "POM_5V_CPU": (366, 406)},
    ),
    "nano_jp4_datadog": stats(
        ram=(534, 3964),
        swap=(5, 1982),
        cpu=[16, 9, 0, 0],
        emc=(0, 204),
        gpu=(0, 76),
        temps={"pll": 34.0, "cpu": 36.5, "pmic": 100.0, "gpu": 36.0, "ao": 39.5, "thermal": 36.25},
        power={"POM_5V_IN": (1022, 1022), "POM_5V_GPU": (0, 0), "POM_5V_CPU": (204, 204)},
    ),
    "nano_jp4_jetson_stats": stats(
        ram=(1180, 3965),
        swap=(149, 1024),
        cpu=[30, 33, 28, 26],
        emc=(10, 1600),
        gpu=(0, 76),
        temps={"pll": 57.0, "cpu": 60.5, "pmic": 100.0, "gpu": 59.0, "ao": 65.0, "thermal": 59.75},
        power={"POM_5V_IN": (4520, 4680), "POM_5V_GPU": (0, 0), "POM_5V_CPU": (1078, 1205)},
    ),
    "xavier_nx_jp512": stats(
        ram=(3168, 6851),
        swap=(161, 3426),
        cpu=[23, 17, 16, 13, 23, 10],
        emc=(2, 204),
        gpu=(0, 114),
        temps={"aux": 45.0, "cpu": 46.5, "thermal": 45.6, "ao": 45.0, "gpu": 45.5, "pmic": 50.0},
        power={"VDD_IN": (2763, 2846), "VDD_CPU_GPU_CV": (650, 670), "VDD_SOC": (650, 711)},
    ),
    "xavier_nx_jp4": stats(
        ram=(5246, 7771),
        swap=(983, 20269),
        cpu=[47, 23, 32, 22, 31, 96],
        emc=(2, 1600),
        gpu=(0, 1109),
        temps={"ao": 29.0, "gpu": 31.5, "pmic": 100.0, "aux": 30.0, "cpu": 33.5, "thermal": 31.35},
        power={"VDD_IN": (6140, 5510), "VDD_CPU_GPU_CV": (2706, 2119), "VDD_SOC": (1074, 1051)},
    ),
    "agx_xavier_jp4_datadog": stats(
        ram=(721, 31927),
        swap=(0, 15963),
        cpu=[2, 0, 0, 0, OFF, OFF, OFF, OFF],
        emc=(0, 665),
        gpu=(0, 318),
        temps={
            "ao": 37.5,
            "gpu": 37.5,
            "tdiode": 40.0,
            "pmic": 100.0,
            "aux": 36.0,
            "cpu": 37.5,
            "thermal": 36.9,
            "tboard": 37.0,
        },
        power={
            "GPU": (0, 0),
            "CPU": (311, 311),
            "SOC": (932, 932),
            "CV": (0, 0),
            "VDDRQ": (621, 621),
            "SYS5V": (1482, 1482),
        },
    ),
    "agx_xavier_jp42_gtop": stats(
        ram=(14700, 15692),
        swap=(898, 8192),
        cpu=[0] * 8,
        emc=(0, None),
        gpu=(0, None),
        temps={
            "ao": 30.0,
            "gpu": 30.5,
            "tboard": 31.0,
            "tdiode": 32.0,
            "aux": 30.5,
            "cpu": 31.5,
            "thermal": 30.8,
            "pmic": 100.0,
        },
        power={
            "GPU": (463, 463),
            "CPU": (618, 618),
            "SOC": (2936, 2936),
            "CV": (0, 0),
            "VDDRQ": (309, 309),
            "SYS5V": (3306, 3306),
        },
    ),
    "orin_jp5_datadog": stats(
        ram=(6334, 15388),
        swap=(491, 7694),
        cpu=[6, 9, 5, 16, OFF, OFF, OFF, OFF],
        emc=(0, 2133),
        gpu=(0, 611),
        temps={
            "cv0": 45.812,
            "cpu": 47.937,
            "soc2": 46.093,
            "soc0": 46.968,
            "cv1": 46.406,
            "gpu": 45.875,
            "tj": 48.875,
            "soc1": 48.875,
            "cv2": 45.75,
        },
        power={"VDD_IN": (5299, 5299), "VDD_CPU_GPU_CV": (773, 773), "VDD_SOC": (1424, 1424)},
    ),
    "orin_jp6_datadog": stats(
        ram=(29114, 30697),
        swap=(4915, 15348),
        cpu=[3, 4, 0, 1, 0, 100, 1, 0, 100, 0, 0, 0],
        emc=(1, 2133),
        gpu=(0, 305),
        temps={
            "cpu": 53.062,
            "soc2": 48.25,
            "soc0": 48.843,
            "gpu": 47.812,
            "tj": 53.062,
            "soc1": 48.968,
        },
        power={
            "VDD_GPU_SOC": (3205, 3205),
            "VDD_CPU_CV": (4405, 4405),
            "VIN_SYS_5V0": (4767, 4767),
        },
    ),
    "orin_jp6_jetson_stats_624": stats(
        ram=(6982, 7620),
        swap=(2640, 16384),
        cpu=[97, 95, 95, 91, 88, 93],
        emc=(18, 3199),
        gpu=(84, 713),
        temps={
            "cv0": 63.031,
            "cpu": 65.562,
            "soc2": 64.156,
            "soc0": 63.031,
            "cv1": 62.937,
            "gpu": 63.5,
            "tj": 65.562,
            "soc1": 64.718,
            "cv2": 60.875,
        },
        power={"VDD_IN": (17946, 15710), "VDD_CPU_GPU_CV": (8896, 7585), "VDD_SOC": (3923, 3515)},
    ),
    # -256C marks powered-off sensors (left out); of two "NC" channels the first is kept
    "orin_agx64_gdwr_14": stats(
        ram=(4321, 62801),
        swap=(19, 31400),
        cpu=[0] * 12,
        emc=(0, 2133),
        gpu=(0, 0),
        temps={
            "cpu": 44.562,
            "tboard": 32.0,
            "soc2": 40.093,
            "tdiode": 33.0,
            "soc0": 41.093,
            "tj": 44.343,
            "soc1": 41.25,
        },
        power={
            "VDD_GPU_SOC": (2340, 2340),
            "VDD_CPU_CV": (390, 390),
            "VIN_SYS_5V0": (4025, 4025),
            "NC": (0, 0),
            "VDDQ_VDD2_1V8AO": (301, 301),
        },
    ),
}


# -- the parser on recorded lines ----------------------------------------------------------


def test_every_recorded_sample_has_expected_values():
    assert sample_names() == sorted(EXPECTED)


def test_samples_cover_the_nano_on_jetpack_46_and_xavier_on_jetpack_5():
    with open(os.path.join(SAMPLES_DIR, "nano_jp461.txt")) as f:
        assert "JetPack 4.6.1" in f.readline()
    with open(os.path.join(SAMPLES_DIR, "xavier_nx_jp512.txt")) as f:
        assert "JetPack 5.1.2" in f.readline()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_recorded_line_parses_to_exact_values(name):
    assert parse_line(sample_line(name)) == EXPECTED[name]


def test_a_trailing_newline_and_carriage_return_change_nothing():
    line = sample_line("nano_jp461")
    assert parse_line(line + "\r\n") == EXPECTED["nano_jp461"]


# -- damaged input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        " ",
        "\x00\x01\x02",
        "tegrastats: permission denied",
        "RAM abc/defMB",
        "RAM 1/MB",
        "CPU [",
        "CPU [%@,,@]",
        "GR3D_FREQ %@[",
        "GR3D_FREQ x%@[,]",
        "@C @-C x@C",
        "/ / mW/mW",
        "\ufffd" * 50,
        "RAM" * 10000,
    ],
)
def test_garbage_gives_an_empty_snapshot_without_raising(garbage):
    result = parse_line(garbage)
    assert isinstance(result, JetsonStats)
    assert result.empty


def test_a_damaged_clock_list_keeps_the_load():
    result = parse_line("GR3D_FREQ 5%@[,] EMC_FREQ 7%@")
    assert (result.gpu_load_ratio, result.gpu_frequency_hz) == (0.05, None)
    assert (result.emc_load_ratio, result.emc_frequency_hz) == (0.07, None)


def test_a_line_cut_after_the_cpu_list_keeps_memory_and_cpu_only():
    line = sample_line("nano_jp461")
    cut = line[: line.index("EMC_FREQ")]
    result = parse_line(cut)
    assert result.ram_used_bytes == 1923 * MIB and result.swap_total_bytes == 1982 * MIB
    assert result.cpu_load_ratio == {0: 0.05, 1: 0.04, 2: 0.03, 3: 0.06}
    assert result.gpu_load_ratio is None and result.temperatures_c == {} and result.power == {}


def test_a_line_cut_inside_a_rail_keeps_the_complete_rails_only():
    line = sample_line("xavier_nx_jp512")
    cut = line[: line.index("VDD_SOC 650mW/") + len("VDD_SOC 650m")]
    result = parse_line(cut)
    assert sorted(result.power) == ["VDD_CPU_GPU_CV", "VDD_IN"]
    assert result.gpu_frequency_hz == 114e6


def test_every_prefix_and_a_thousand_mutations_of_every_sample_parse_without_raising():
    rng = random.Random(5)
    alphabet = "0123456789%@[],/ CmWMBx-.off"
    for name in EXPECTED:
        line = sample_line(name)
        for end in range(len(line) + 1):
            parse_line(line[:end])
        for _ in range(1000):
            chars = list(line)
            for _ in range(rng.randint(1, 5)):
                chars[rng.randrange(len(chars))] = rng.choice(alphabet)
            result = parse_line("".join(chars))
            for ratio in [result.gpu_load_ratio, result.emc_load_ratio]:
                assert ratio is None or ratio >= 0


# -- Prometheus gauges ----------------------------------------------------------------------


def exposition_of(snapshot):
    registry = CollectorRegistry()
    registry.register(JetsonCollector(lambda: snapshot))
    return generate_latest(registry).decode()


def samples_of(text):
    """{(name, ((label, value), ...)): value} of an exposition, via prometheus_client's parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_gauges_carry_the_nano_sample_in_base_units():
    values = samples_of(exposition_of(EXPECTED["nano_jp461"]))
    assert values[("jetson_gpu_load_ratio", ())] == 0.0
    assert values[("jetson_gpu_frequency_hertz", ())] == 76e6
    assert values[("jetson_emc_load_ratio", ())] == 0.0
    assert values[("jetson_ram_used_bytes", ())] == 1923 * MIB
    assert values[("jetson_swap_total_bytes", ())] == 1982 * MIB
    assert values[("jetson_temperature_celsius", (("zone", "thermal"),))] == 40.0
    assert values[("jetson_power_milliwatts", (("rail", "POM_5V_IN"),))] == 1750.0
    assert values[("jetson_power_average_milliwatts", (("rail", "POM_5V_IN"),))] == 1628.0
    assert values[("jetson_cpu_load_ratio", (("core", "3"),))] == 0.06


def test_only_what_the_line_held_is_exported():
    text = exposition_of(parse_line("RAM 900/3956MB (lfb 1x4MB) GR3D_FREQ 12%"))
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert names == {"jetson_ram_used_bytes", "jetson_ram_total_bytes", "jetson_gpu_load_ratio"}
    assert exposition_of(None) == ""


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_promtool_accepts_the_gauges_of_every_sample(name, promtool):
    text = exposition_of(parse_line(sample_line(name)))
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        universal_newlines=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout


def test_every_jetson_family_is_named_with_the_jetson_prefix():
    for name in EXPECTED:
        for family in jetson_families(EXPECTED[name]):
            assert family.name.startswith("jetson_") and family.type == "gauge"


# -- the reader thread ----------------------------------------------------------------------


def test_not_a_jetson_is_one_info_line_and_nothing_started(caplog):
    stop = threading.Event()
    reader = TegrastatsReader(stop, 1.0, locate=lambda: None)
    with caplog.at_level(logging.DEBUG, logger="edged"):
        assert reader.start() is False
        reader.stop()
    records = [r for r in caplog.records if r.name.startswith("edged")]
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("INFO", "no tegrastats: Jetson telemetry off")
    ]
    assert reader.latest() is None and not reader.running
    assert not [t for t in threading.enumerate() if t.name == "telemetry"]


def test_find_tegrastats_is_none_without_the_binary_and_finds_it_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(reader_module, "DEFAULT_PATHS", (str(tmp_path / "absent"),))
    assert find_tegrastats() is None
    binary = write_stand_in(tmp_path, "")
    assert find_tegrastats() == binary


def write_stand_in(directory, body):
    """A ``tegrastats`` shell script: the stand-in for the Jetson-only program."""
    path = os.path.join(str(directory), "tegrastats")
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def replaying_stand_in(directory, line, exit_after=None):
    """Replays ``line`` every --interval ms (records its arguments); exits after N lines."""
    args_file = os.path.join(str(directory), "args")
    count = "i=0\n" if exit_after else ""
    stop = f"  i=$((i+1)); [ $i -ge {exit_after} ] && exit 3\n" if exit_after else ""
    body = (
        f'echo "$@" > {args_file}\n'
        f"ms=$2\n{count}"
        "while true; do\n"
        f"  echo '{line}'\n{stop}"
        '  sleep "$(echo "$ms" | awk \'{print $1/1000}\')"\n'
        "done\n"
    )
    return write_stand_in(directory, body), args_file


def test_the_reader_runs_tegrastats_with_the_interval_and_keeps_the_newest_line(tmp_path):
    binary, args_file = replaying_stand_in(tmp_path, sample_line("nano_jp461"))
    stop = threading.Event()
    reader = TegrastatsReader(stop, 0.1, locate=lambda: binary)
    assert reader.start() is True
    try:
        assert wait_for(lambda: reader.latest() is not None)
        assert reader.latest() == EXPECTED["nano_jp461"]
        assert wait_for(lambda: reader.lines >= 3)
        with open(args_file) as f:
            assert f.read().split() == ["--interval", "100"]
        assert [t for t in threading.enumerate() if t.name == "telemetry"]
    finally:
        reader.stop()
    assert not reader.running
    assert reader._proc is None  # tegrastats was ended and reaped


def test_the_shared_stop_event_ends_the_reader_too(tmp_path):
    binary, _ = replaying_stand_in(tmp_path, sample_line("xavier_nx_jp512"))
    stop = threading.Event()
    reader = TegrastatsReader(stop, 0.1, locate=lambda: binary)
    reader.start()
    assert wait_for(lambda: reader.latest() is not None)
    stop.set()
    reader.stop()
    assert not reader.running and reader.restarts == 0


def test_tegrastats_exiting_is_restarted_with_one_warning(tmp_path, caplog):
    binary, _ = replaying_stand_in(tmp_path, sample_line("nano_jp461"), exit_after=1)
    stop = threading.Event()
    reader = TegrastatsReader(
        stop, 0.05, locate=lambda: binary, restart_initial_s=0.01, restart_max_s=0.05
    )
    with caplog.at_level(logging.DEBUG, logger="edged"):
        reader.start()
        try:
            assert wait_for(lambda: reader.restarts >= 3)
        finally:
            reader.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("tegrastats exited with code 3")
    assert reader.lines >= 3  # each run's line was read


def test_a_tegrastats_that_cannot_start_is_retried_not_raised(tmp_path):
    path = os.path.join(str(tmp_path), "tegrastats")
    with open(path, "w") as f:
        f.write("not executable")
    reader = TegrastatsReader(
        threading.Event(), 0.05, locate=lambda: path, restart_initial_s=0.01, restart_max_s=0.02
    )
    reader.start()
    try:
        assert wait_for(lambda: reader.restarts >= 2)
    finally:
        reader.stop()
    assert reader.latest() is None


def test_a_snapshot_older_than_three_intervals_is_stale():
    now = [100.0]
    reader = TegrastatsReader(threading.Event(), 1.0, locate=lambda: None, clock=lambda: now[0])
    reader.feed(sample_line("nano_jp461"))
    assert reader.latest() == EXPECTED["nano_jp461"]
    now[0] += 3.5
    assert reader.latest() is None


def test_lines_that_hold_nothing_are_counted_not_kept():
    reader = TegrastatsReader(threading.Event(), 1.0, locate=lambda: None)
    assert reader.feed("Warning: some debugfs node is unreadable\n") is None
    assert reader.unparsed == 1 and reader.latest() is None

"""``promtool check metrics`` is clean on a scrape of the running daemon.

``edged run`` runs as a real process on a clip with the digits model, metrics on a
free port (``metrics.port: 0``; the URL is read from its log); the scrape is taken
over HTTP once frames have flowed, and piped to Prometheus's own checker.
"""

import re
import signal
import subprocess
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from .test_daemon import Edged, make_clip, write_config
from .test_telemetry import promtool  # noqa: F401 - a fixture: fails when promtool is missing


def scrape(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def values_of(text):
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape_after_frames_flowed(url, timeout=30.0):
    """Scrape until the stream has inferred frames and every stage has latencies."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = scrape(url)
        values = values_of(text)
        counts = [
            v for (name, _), v in values.items() if name == "edged_inference_stage_seconds_count"
        ]
        inferred = values.get(("edged_frames_total", (("outcome", "inferred"), ("stream", "cam"))))
        if inferred and inferred >= 10 and len(counts) == 5 and all(counts):
            return text
        time.sleep(0.2)
    raise AssertionError(f"no frames flowed within {timeout} s; last scrape:\n{text}")


def test_promtool_check_metrics_is_clean_on_a_live_scrape(tmp_path, promtool):  # noqa: F811
    clip = make_clip(str(tmp_path / "clip.avi"), frames=500)  # 20 s at 25 fps
    config = str(tmp_path / "edged.yaml")
    write_config(config, {"cam": clip}, metrics="host: 127.0.0.1, port: 0")
    edged = Edged(config)
    try:
        line = edged.lines[edged.wait_for("metrics at http://")]
        url = re.search(r"(http://127\.0\.0\.1:\d+/metrics)", line).group(1)
        edged.wait_for("stream cam: streaming")
        text = scrape_after_frames_flowed(url)
        check = subprocess.run(
            [promtool, "check", "metrics"],
            input=text,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            universal_newlines=True,
            timeout=60,
        )
    finally:
        code = edged.stop(signal.SIGTERM)
    assert check.returncode == 0, check.stdout
    assert check.stdout.strip() == "", "promtool warnings:\n" + check.stdout

    values = values_of(text)
    cam = (("stream", "cam"),)
    assert values[("edged_frames_total", (("outcome", "inferred"), ("stream", "cam")))] >= 10
    assert values[("edged_stream_fps", cam)] > 0
    assert values[("edged_stream_up", cam)] == 1
    total = (("model", "digits"), ("stage", "total"), ("stream", "cam"))
    assert values[("edged_inference_stage_seconds_count", total)] > 0
    assert values[("edged_inference_stage_seconds_bucket", (("le", "+Inf"),) + total)] > 0
    assert values[("process_resident_memory_bytes", ())] > 0
    assert values[("process_cpu_seconds_total", ())] > 0
    assert any(name == "edged_build_info" for name, _ in values)
    assert any(name == "edged_model_info" for name, _ in values)

    assert code == 0
    assert any("shutdown: stop metrics server" in line for line in edged.lines)
    assert not any("Traceback" in line for line in edged.lines)
    try:
        scrape(url)
        raise AssertionError("metrics still served after the daemon exited")
    except OSError:
        pass

"""The daemon on a real RTSP camera that dies and comes back: it reconnects and never exits."""

import signal
import time

from .test_daemon import Edged, write_config
from .test_sources_rtsp import RtspServer, clip  # noqa: F401 - clip is a pytest fixture

CYCLES = 3


def test_rtsp_server_killed_and_restarted_the_daemon_reconnects_and_keeps_running(tmp_path, clip):  # noqa: F811
    server = RtspServer(clip).start()
    config = str(tmp_path / "edged.yaml")
    write_config(config, {"door": {
        "source": server.url, "stall_timeout_s": 2, "open_timeout_s": 2, "read_timeout_s": 2,
        "backoff_initial_s": 0.2, "backoff_max_s": 0.5,
    }})  # fmt: skip
    edged = Edged(config)
    try:
        mark = edged.wait_for("stream door: streaming")
        for _ in range(CYCLES):
            server.kill()  # SIGKILL: the camera vanishes mid-stream
            mark = edged.wait_for("stream door", after=mark + 1)
            mark = edged.wait_for("streaming -> stalled", after=mark)
            time.sleep(1.0)  # a few failed reconnects while the camera is away
            server.start()
            mark = edged.wait_for("-> streaming", after=mark + 1, timeout=40)
            assert edged.proc.poll() is None, "the daemon exited while the camera was away"
        # inference goes on after the last reconnect
        mark = edged.wait_for("stream door: streaming", after=mark + 1)
        assert "inferred/s" in edged.lines[mark]
    finally:
        server.kill()
        code = edged.stop(signal.SIGTERM)
    assert code == 0
    assert not any("Traceback" in line for line in edged.lines)

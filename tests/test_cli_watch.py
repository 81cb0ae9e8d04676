"""`edged watch` as a real process against brokers it cannot use: nothing listening, a host
that does not resolve, wrong credentials (a real Mosquitto), and a broker that comes up late."""

import os
import subprocess
import sys
import time

import pytest

from .conftest import REPO, run_cli
from .mosquitto import Mosquitto, free_port, stop_all_brokers


@pytest.fixture(autouse=True)
def _brokers():
    yield
    stop_all_brokers()


def test_nothing_listening_is_one_line_and_exit_2():
    port = free_port()  # bound and released: nothing listens there
    result = run_cli(["watch", "--port", str(port), "--connect-timeout", "1"])
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"edged: error: cannot connect to the MQTT broker at 127.0.0.1:{port}: Connection refused"
    ]


def test_a_host_that_does_not_resolve_is_one_line_and_exit_2():
    result = run_cli(["watch", "--host", "no-such-broker.invalid", "--connect-timeout", "0"])
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        "edged: error: cannot connect to the MQTT broker at no-such-broker.invalid:1883: "
        "cannot resolve the host name ("
    )


def test_wrong_credentials_are_one_line_and_exit_2(tmp_path):
    broker = Mosquitto(str(tmp_path / "broker"), users={"viewer": "right"}).start()
    result = run_cli(
        ["watch", "--port", str(broker.port), "--username", "viewer", "--password-env", "PW"],
        env={"PW": "wrong"},
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"edged: error: the MQTT broker at 127.0.0.1:{broker.port} refused the connection: "
        + ("bad user name or password" if "bad user" in result.stderr else "not authorised")
    ]
    assert "wrong" not in result.stderr + result.stdout


def test_a_broker_that_starts_within_the_connect_timeout_is_used(tmp_path):
    broker = Mosquitto(str(tmp_path / "broker"))  # port chosen, not started yet
    watch = subprocess.Popen(
        [sys.executable, "-m", "edged", "watch", "--port", str(broker.port),
         "--connect-timeout", "120"],
        cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True,
    )  # fmt: skip
    try:
        # Give watch time for a failed first attempt (on a slow machine it may come later; the
        # test then still checks that it connects).
        time.sleep(2)
        broker.start()
        first = watch.stdout.readline()  # blocks until watch connects (or exits: "")
        assert first.startswith(f"# connected to 127.0.0.1:{broker.port}"), first
    finally:
        watch.terminate()
        watch.wait(30)
        watch.stdout.close()
        watch.stderr.close()

"""Build a device's updater from its validated config, and start it inside the daemon."""

import logging
import os
import time
from typing import Any, Optional

from ..config.model import Config
from ..errors import EdgedError
from ..signing.keys import pinned_keylist
from .manifest import UpdateLimits, parse_checked
from .seams import Deployer, Transport
from .store import MANIFEST_FILE, SlotStore, default_state_dir
from .updater import Settings, Updater

logger = logging.getLogger(__name__)


def settings_from_config(config: Config) -> Settings:
    update = config.update
    prefix = config.mqtt.topic_prefix if config.mqtt is not None else "edged"
    return Settings(
        device_id=config.device_id,
        prefix=prefix,
        state_dir=update.state_dir or default_state_dir(),
        groups=tuple(update.groups),
        probation_s=update.probation_s,
        window=update.window,
        request_timeout_s=update.request_timeout_s,
        transfer_stall_s=update.transfer_stall_s,
        step_timeout_s=update.step_timeout_s,
        build_timeout_s=update.build_timeout_s,
        limits=UpdateLimits(
            max_total_bytes=update.max_total_mb << 20, max_chunks=update.max_chunks
        ),  # fmt: skip
    )


def make_updater(config: Config, transport: Transport, deployer: Deployer) -> Optional[Updater]:
    """The updater of ``config`` (None when updates are off).

    Raises:
        UpdateError: the pinned key list cannot be used.
    """
    if not config.update.enabled or not config.update.keys_file:
        return None
    settings = settings_from_config(config)
    trusted = pinned_keylist(config.update.keys_file, settings.state_dir, int(time.time()))
    return Updater(settings, trusted, transport, deployer)


def serve_installed(state_dir: str, deployer: Any, daemon: Any) -> None:
    """At start-up: a model slot whose update was committed serves that version again (the
    YAML still names the model it started from). A version that does not load is logged and
    the configured model serves."""
    for model in list(daemon.models.names()):
        if not os.path.isdir(os.path.join(state_dir, "updates", model)):
            continue
        store = SlotStore(state_dir, model)
        version = store.serving_version()
        if not version:
            continue
        files = store.version_dir(version)
        try:
            with open(os.path.join(files, MANIFEST_FILE), "rb") as f:
                manifest = parse_checked(f.read())
            task = deployer.load(model, files, manifest)
            old = daemon.replace_model(model, task)
        except (OSError, EdgedError) as e:
            logger.error("model %s: installed update v%s not served: %s", model, version, e)
            continue
        old.backend.close()
        logger.info("model %s: serving installed update v%s", model, version)


class Updates:
    """The daemon's model updates: the updater and its MQTT connection."""

    def __init__(self, updater: Updater, transport: Any) -> None:
        self.updater = updater
        self.transport = transport

    def stop(self) -> None:
        self.updater.stop()
        self.transport.stop()


def start_updates(config: Config, daemon: Any) -> Optional[Updates]:
    """Started model updates for a running daemon, or None when ``update.enabled`` is off.

    Raises:
        UpdateError, ConfigError: the pinned key list or the MQTT settings cannot be used.
    """
    if not config.update.enabled or config.mqtt is None:
        return None
    from .mqtt_transport import MqttTransport
    from .slots_deployer import SlotsDeployer

    deployer = SlotsDeployer(daemon)
    transport = MqttTransport(config.mqtt, config.device_id)
    updater = make_updater(config, transport, deployer)
    if updater is None:
        return None
    serve_installed(updater.settings.state_dir, deployer, daemon)
    transport.handler = updater.on_message
    transport.start()
    updater.start()
    logger.info("model updates: following %s", ", ".join(updater.topics.desired_topics))
    return Updates(updater, transport)

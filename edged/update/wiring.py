"""Build a device's :class:`~.updater.Updater` from its validated config."""

import time
from typing import Optional

from ..config.model import Config
from .keys import read_keylist
from .manifest import UpdateLimits
from .seams import Deployer, Transport
from .store import default_state_dir
from .updater import Settings, Updater


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
    trusted = read_keylist(config.update.keys_file, int(time.time()))
    return Updater(settings_from_config(config), trusted, transport, deployer)

"""What a configuration reload changes, as a value: :func:`plan_reload` (a pure function).

The daemon runs the enabled streams of its config and the models they use. Given
the running config and the new one, the plan says which streams stop (removed or
disabled), restart (their config changed, the model they use included), start
(new or enabled) or keep running, and which models stop (no enabled stream uses
them), start (newly used), are replaced (config changed: the new task is swapped
into the running worker, so the streams that use it keep running) or stay.
"""

from typing import NamedTuple, Set, Tuple

from .config import Config


class ReloadPlan(NamedTuple):
    """Names of streams and models, each tuple sorted."""

    stop_streams: Tuple[str, ...]
    restart_streams: Tuple[str, ...]
    start_streams: Tuple[str, ...]
    unchanged_streams: Tuple[str, ...]
    stop_models: Tuple[str, ...]
    start_models: Tuple[str, ...]
    replace_models: Tuple[str, ...]
    unchanged_models: Tuple[str, ...]

    @property
    def load_models(self) -> Tuple[str, ...]:
        """The models to load before anything changes (new ones and replacements)."""
        return tuple(sorted(self.start_models + self.replace_models))


def models_needed(config: Config) -> Set[str]:
    """The models the enabled streams of ``config`` use (the ones the daemon loads)."""
    return {s.model for s in config.streams.values() if s.enabled}


def running_streams(config: Config) -> Set[str]:
    return {name for name, s in config.streams.items() if s.enabled}


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """The changes that take a daemon running ``old`` to running ``new``."""
    old_streams, new_streams = running_streams(old), running_streams(new)
    kept_streams = old_streams & new_streams
    changed_streams = {s for s in kept_streams if old.streams[s] != new.streams[s]}
    old_models, new_models = models_needed(old), models_needed(new)
    kept_models = old_models & new_models
    changed_models = {m for m in kept_models if old.models[m] != new.models[m]}
    return ReloadPlan(
        stop_streams=_sorted(old_streams - new_streams),
        restart_streams=_sorted(changed_streams),
        start_streams=_sorted(new_streams - old_streams),
        unchanged_streams=_sorted(kept_streams - changed_streams),
        stop_models=_sorted(old_models - new_models),
        start_models=_sorted(new_models - old_models),
        replace_models=_sorted(changed_models),
        unchanged_models=_sorted(kept_models - changed_models),
    )


def _sorted(names: Set[str]) -> Tuple[str, ...]:
    return tuple(sorted(names))

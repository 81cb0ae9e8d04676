"""The daemon's tracking stages: one per model that tracks, all sharing one counts file.

A model's worker gets its :class:`~edged.pipeline.tracking.TrackingStage` when it starts, and a
new one (or none) when a reload replaces the model with a changed ``tracking`` section; the
running streams are handed to the new stage, and the totals carry over through the counts file
(edged/tracking/store.py), which is opened on first use.
"""

from typing import Any, Iterable, Optional, Tuple

from .pipeline.tracking import counts_store, stage_for


class TrackingStages:
    def __init__(self) -> None:
        self.store: Optional[Any] = None  # edged.tracking.store.CountsStore, once a model tracks

    def attach(self, config: Any, name: str, task: Any, worker: Any) -> None:
        """A starting worker (no frame flows yet): its stage, when the model tracks."""
        if config.models[name].tracking.enabled:
            worker.tracking = stage_for(config, name, task, self._store(config))

    def replaced(
        self,
        config: Any,
        name: str,
        task: Any,
        before: Optional[Any],
        worker: Optional[Any],
        streams: Iterable[Tuple[str, Any]],
    ) -> None:
        """A reload replaced model ``name`` (its config was ``before``): when its tracking
        changed, a new stage (or none) for its running streams.

        Args:
            streams: ``(stream id, running stream)`` pairs of every running stream.
        """
        if worker is None:
            return
        if before is not None and before.tracking == config.models[name].tracking:
            return
        stage = stage_for(config, name, task, self._store(config))
        for _, running in sorted(streams):
            if stage is not None and running.model == name:
                stage.add_stream(config.streams[running.config.name])
        worker.tracking = stage

    def _store(self, config: Any) -> Any:
        if self.store is None:
            self.store = counts_store(config)
        return self.store

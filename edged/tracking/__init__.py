"""Per-stream multi-object tracking and people counting (numpy only).

- :mod:`.kalman`: a constant-velocity Kalman filter over many boxes at once.
- :mod:`.assignment`: greedy IOU matching.
- :mod:`.tracker`: the ByteTrack-style tracker that gives each detection a stable ``track_id``.
- :mod:`.geometry`: anchors, point-in-polygon, segment crossing.
- :mod:`.counting`: zones (occupancy, dwell) and directed lines (in/out totals).
- :mod:`.store`: the totals' JSON file beside the MQTT outbox.
- :mod:`.draw`: zones, lines and track trails on a frame.

The pipeline runs them per stream in :mod:`edged.pipeline.tracking`.
"""

"""A constant-velocity Kalman filter for many boxes at once, in closed form.

The state of one box is (cx, cy, w, h) and their velocities, as in SORT and ByteTrack
(``yolox/tracker/kalman_filter.py`` keeps the aspect ratio instead of the width). With
the measurement noise and the process noise independent per coordinate, the 8-state
filter splits exactly into four independent (position, velocity) filters, so each 2x2
covariance is updated with scalar formulas over arrays: no matrix inverse, no Python loop
per track. Noise scales with the box size, as in ByteTrack (``std_weight_position`` 1/20,
``std_weight_velocity`` 1/160 of the height; here of the width for x and w).
"""

from typing import Tuple

import numpy as np

#: Standard deviations as fractions of the box size (ByteTrack's weights).
POSITION_STD = 1.0 / 20.0
VELOCITY_STD = 1.0 / 160.0


def boxes_to_measurements(boxes: np.ndarray) -> np.ndarray:
    """[N, 4] corners (x1, y1, x2, y2) -> [N, 4] (cx, cy, w, h)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return np.stack([boxes[:, 0] + w / 2, boxes[:, 1] + h / 2, w, h], axis=1)


def measurements_to_boxes(z: np.ndarray) -> np.ndarray:
    """[N, 4] (cx, cy, w, h) -> [N, 4] corners."""
    half_w = np.maximum(z[:, 2], 0.0) / 2
    half_h = np.maximum(z[:, 3], 0.0) / 2
    return np.stack([z[:, 0] - half_w, z[:, 1] - half_h, z[:, 0] + half_w, z[:, 1] + half_h], 1)


def _scale(z: np.ndarray) -> np.ndarray:
    """[N, 4] noise scale per coordinate: the width for x and w, the height for y and h."""
    size = np.maximum(np.abs(z[:, 2:4]), 1.0)
    return np.concatenate([size, size], axis=1)


class BoxFilters:
    """The filter state of N boxes: position x, velocity v, covariance (p00, p01, p11)."""

    def __init__(self) -> None:
        self.x = np.zeros((0, 4))
        self.v = np.zeros((0, 4))
        self.p00 = np.zeros((0, 4))
        self.p01 = np.zeros((0, 4))
        self.p11 = np.zeros((0, 4))

    def __len__(self) -> int:
        return len(self.x)

    def add(self, boxes: np.ndarray) -> None:
        """Start a filter per box, at rest, with ByteTrack's initial uncertainty."""
        z = boxes_to_measurements(boxes)
        s = _scale(z)
        self.x = np.concatenate([self.x, z])
        self.v = np.concatenate([self.v, np.zeros_like(z)])
        self.p00 = np.concatenate([self.p00, (2 * POSITION_STD * s) ** 2])
        self.p01 = np.concatenate([self.p01, np.zeros_like(z)])
        self.p11 = np.concatenate([self.p11, (10 * VELOCITY_STD * s) ** 2])

    def keep(self, mask: np.ndarray) -> None:
        for name in ("x", "v", "p00", "p01", "p11"):
            setattr(self, name, getattr(self, name)[mask])

    def predict(self, dt: float = 1.0) -> None:
        """Advance every filter by ``dt`` frames."""
        if not len(self):
            return
        s = _scale(self.x)
        q_pos = (POSITION_STD * s) ** 2 * dt
        q_vel = (VELOCITY_STD * s) ** 2 * dt
        self.x = self.x + self.v * dt
        # P <- F P F^T + Q with F = [[1, dt], [0, 1]]
        p00 = self.p00 + dt * (2 * self.p01 + dt * self.p11) + q_pos
        self.p01 = self.p01 + dt * self.p11
        self.p11 = self.p11 + q_vel
        self.p00 = p00

    def update(self, index: np.ndarray, boxes: np.ndarray) -> None:
        """Correct the filters ``index`` with their measured boxes."""
        if not len(index):
            return
        z = boxes_to_measurements(boxes)
        x, v = self.x[index], self.v[index]
        p00, p01, p11 = self.p00[index], self.p01[index], self.p11[index]
        r = (POSITION_STD * _scale(x)) ** 2
        innovation = z - x
        total = p00 + r
        k0, k1 = p00 / total, p01 / total
        self.x[index] = x + k0 * innovation
        self.v[index] = v + k1 * innovation
        self.p00[index] = (1 - k0) * p00
        self.p01[index] = (1 - k0) * p01
        self.p11[index] = p11 - k1 * p01

    def boxes(self) -> np.ndarray:
        """[N, 4] predicted corners."""
        return measurements_to_boxes(self.x)

    def velocities(self) -> Tuple[np.ndarray, np.ndarray]:
        return self.v[:, 0], self.v[:, 1]

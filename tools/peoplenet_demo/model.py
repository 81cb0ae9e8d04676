"""A small fully-convolutional DetectNet_v2-format detector with PeopleNet's I/O contract.

Contract (PeopleNet's NGC model card; DeepStream's peopleNet_config.pbtxt): input ``input_1``
1x3x544x960 RGB ``x/255`` (stretch resize); outputs ``output_cov/Sigmoid`` 1x3x34x60 (person,
bag, face coverage) and ``output_bbox/BiasAdd`` 1x12x34x60 (per class x1, y1, x2, y2 terms,
decoded as edged.tasks.detection does). Total stride 16. Depthwise-separable blocks keep it well
under 1 MB and fast on a CPU; the two dilated blocks at stride 16 give a receptive field (~300
px) larger than the tallest person.
"""

from typing import List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from peoplenet_demo.contract import BBOX_NORM, CLASSES, GRID_H, GRID_W, NET_H, NET_W, OFFSET, STRIDE

# Channel widths at strides 2, 4, 8, 16 and of the stride-16 head blocks.
WIDTHS = (24, 48, 64, 128, 160)
# DetectNet_v2's coverage "ellipse" radii, as a fraction of the box width / height.
COVERAGE_RADIUS = (0.4, 0.4)


def _conv_bn(
    cin: int, cout: int, stride: int, kernel: int = 3, groups: int = 1, dilation: int = 1
) -> nn.Sequential:
    pad = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _separable(cin: int, cout: int, stride: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        _conv_bn(cin, cin, stride, 3, groups=cin, dilation=dilation),
        _conv_bn(cin, cout, 1, 1),
    )


class DemoDetectNet(nn.Module):
    """Backbone + 1x1 heads; forward returns (coverage LOGITS, bbox) -- see ExportWrapper."""

    def __init__(self, num_classes: int = len(CLASSES), widths: Sequence[int] = WIDTHS) -> None:
        super().__init__()
        w0, w1, w2, w3, w4 = widths
        self.features = nn.Sequential(
            _conv_bn(3, w0, 2),  # 272 x 480
            _separable(w0, w1, 2),  # 136 x 240
            _separable(w1, w1, 1),
            _separable(w1, w2, 2),  # 68 x 120
            _separable(w2, w2, 1),
            _separable(w2, w3, 2),  # 34 x 60
            _separable(w3, w4, 1),
            _separable(w4, w4, 1, dilation=2),
            _separable(w4, w4, 1, dilation=4),
        )
        self.cov = nn.Conv2d(w4, num_classes, 1)
        self.bbox = nn.Conv2d(w4, 4 * num_classes, 1)
        # Start with coverage ~0.01 (objects are rare cells), like detection heads usually do.
        nn.init.constant_(self.cov.bias, -4.6)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.cov(f), self.bbox(f)


class ExportWrapper(nn.Module):
    """The deployed graph: sigmoid coverage (output_cov/Sigmoid) and raw bbox terms."""

    def __init__(self, net: DemoDetectNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        logits, bbox = self.net(x)
        return torch.sigmoid(logits), bbox


def targets_for_frame(
    boxes: Sequence[Sequence[float]],
    src_w: int,
    src_h: int,
    ignore_regions: Sequence[Sequence[float]] = (),
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DetectNet_v2 training targets of one frame (person class only; bag/face stay 0).

    Returns coverage [3, 34, 60] (1 where a cell centre lies inside a box's central ellipse),
    bbox [12, 34, 60] (the decode formula inverted, on covered cells) and a coverage loss weight
    [34, 60] (0 in "don't care" regions). Where ellipses overlap, the box whose foot is lowest
    (nearest the camera, drawn in front) owns the cell.
    """
    sx = NET_W / float(src_w)
    sy = NET_H / float(src_h)
    cov = np.zeros((len(CLASSES), GRID_H, GRID_W), np.float32)
    bbox = np.zeros((4 * len(CLASSES), GRID_H, GRID_W), np.float32)
    weight = np.ones((GRID_H, GRID_W), np.float32)
    cx = np.arange(GRID_W, dtype=np.float32) * STRIDE + OFFSET
    cy = np.arange(GRID_H, dtype=np.float32) * STRIDE + OFFSET
    gx, gy = np.meshgrid(cx, cy)
    for r in ignore_regions:
        inside = (gx >= r[0] * sx) & (gx < r[2] * sx) & (gy >= r[1] * sy) & (gy < r[3] * sy)
        weight[inside] = 0.0
    for x1, y1, x2, y2 in sorted(boxes, key=lambda b: b[3]):
        nx1, ny1, nx2, ny2 = x1 * sx, y1 * sy, x2 * sx, y2 * sy
        bx, by = (nx1 + nx2) / 2.0, (ny1 + ny2) / 2.0
        rx = max(COVERAGE_RADIUS[0] * (nx2 - nx1), 1.0)
        ry = max(COVERAGE_RADIUS[1] * (ny2 - ny1), 1.0)
        inside = ((gx - bx) / rx) ** 2 + ((gy - by) / ry) ** 2 <= 1.0
        # Every object owns at least the cell containing its centre.
        ci = min(max(int(by // STRIDE), 0), GRID_H - 1)
        cj = min(max(int(bx // STRIDE), 0), GRID_W - 1)
        inside[ci, cj] = True
        cov[0][inside] = 1.0
        bbox[0][inside] = (gx[inside] - nx1) / BBOX_NORM
        bbox[1][inside] = (gy[inside] - ny1) / BBOX_NORM
        bbox[2][inside] = (nx2 - gx[inside]) / BBOX_NORM
        bbox[3][inside] = (ny2 - gy[inside]) / BBOX_NORM
    return cov, bbox, weight


def count_parameters(net: nn.Module) -> int:
    return sum(int(p.numel()) for p in net.parameters())


def flip_boxes(boxes: Sequence[Sequence[float]], width: int) -> List[List[float]]:
    """Boxes of a horizontally mirrored frame."""
    return [[width - b[2], b[1], width - b[0], b[3]] for b in boxes]

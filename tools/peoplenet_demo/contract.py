"""PeopleNet's I/O contract that the demo detector keeps (NGC model card; DeepStream's
peopleNet_config.pbtxt).

Kept free of torch so evaluation runs where only edged's runtime dependencies are installed.
"""

INPUT_NAME = "input_1"
COVERAGE_NAME = "output_cov/Sigmoid"
BBOX_NAME = "output_bbox/BiasAdd"
NET_W = 960
NET_H = 544
STRIDE = 16
BBOX_NORM = 35.0
OFFSET = 0.5
GRID_W = NET_W // STRIDE  # 60
GRID_H = NET_H // STRIDE  # 34
CLASSES = ("person", "bag", "face")

"""JPEG photos with an EXIF orientation tag: applied by default, ignored with --ignore-exif.

The JPEG is real: OpenCV encodes the pixels and the test inserts an APP1 ``Exif`` segment
(a big-endian TIFF header and one IFD entry, tag 0x0112 Orientation, per the Exif 2.3
specification, section 4.6.4) right after the SOI marker, as cameras write it.
"""

import os
import struct

import cv2
import numpy as np

from edged.media import iterate_media, read_image

from . import onnx_models
from .conftest import run_cli

#: Exif orientation 6: the stored image must be turned 90 degrees clockwise to be upright
ROTATE_90_CW = 6


def exif_app1(orientation):
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8)  # big-endian TIFF header, IFD0 at offset 8
    tiff += struct.pack(">H", 1)  # one entry: Orientation, SHORT, count 1, value, padding
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff += struct.pack(">I", 0)  # no next IFD
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def write_photo(path, orientation=ROTATE_90_CW):
    """A 200 x 100 (w x h) JPEG, left half red, right half blue, tagged ``orientation``."""
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, :100] = (0, 0, 255)
    image[:, 100:] = (255, 0, 0)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    data = data.tobytes()
    assert data[:2] == b"\xff\xd8"
    with open(path, "wb") as f:
        f.write(data[:2] + exif_app1(orientation) + data[2:])
    return path


def test_the_orientation_tag_is_applied_by_default(tmp_path):
    photo = write_photo(str(tmp_path / "photo.jpg"))
    upright = read_image(photo)
    assert upright.shape == (200, 100, 3)  # turned: portrait
    # turned clockwise, the left (red) half is now on top
    assert upright[:90, :, 2].mean() > 200 and upright[:90, :, 0].mean() < 50
    assert upright[110:, :, 0].mean() > 200


def test_ignore_exif_reads_the_pixels_as_stored(tmp_path):
    photo = write_photo(str(tmp_path / "photo.jpg"))
    stored = read_image(photo, apply_exif=False)
    assert stored.shape == (100, 200, 3)
    assert stored[:, :90, 2].mean() > 200 and stored[:, 110:, 0].mean() > 200
    (item,) = list(iterate_media([photo], apply_exif=False))
    assert item.image.shape == (100, 200, 3)


def test_edged_infer_ignore_exif_feeds_the_model_the_stored_pixels(tmp_path):
    os.makedirs(str(tmp_path / "photos"))
    photo = write_photo(str(tmp_path / "photos" / "p.jpg"))
    model = onnx_models.write(str(tmp_path / "m.onnx"), onnx_models.classifier(3))
    shapes = {}
    for flags in ([], ["--ignore-exif"]):
        out = tmp_path / ("out" + "".join(flags))
        result = run_cli(["infer", "--model", model, "--output", str(out)] + flags + [photo])
        assert result.returncode == 0, result.stderr
        annotated = cv2.imread(str(out / "p.jpg"))
        height, width = annotated.shape[:2]
        shapes[tuple(flags)] = height / width
    assert shapes[()] == 2.0  # upright (portrait), as a photo viewer shows it
    assert shapes[("--ignore-exif",)] == 0.5  # as stored, as jetson-inference reads it

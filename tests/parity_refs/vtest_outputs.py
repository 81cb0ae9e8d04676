"""Raw PeopleNet-demo outputs for every frame of OpenCV's vtest.avi, cached on disk.

The parity tests compare post-processing only, so the detector runs once per frame
and its coverage/bbox tensors are kept in ``.cache/parity/`` (git-ignored); every
compat and clustering then reads the same tensors. The input is prepared here
independently of edged's pre-processing (stretch resize, RGB, x/255, CHW), which
is not what these tests are about.
"""

import hashlib
import os
import subprocess

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(REPO, "models", "peoplenet-demo", "peoplenet_demo.onnx")
CACHE_DIR = os.path.join(REPO, ".cache", "parity")
NET_W, NET_H = 960, 544
VTEST_FRAMES = 795


def vtest_path() -> str:
    """vtest.avi via tools/fetch_vtest.sh (Debian's opencv-doc), fetched once."""
    out = subprocess.check_output(["bash", os.path.join(REPO, "tools", "fetch_vtest.sh")])
    return out.decode().strip().splitlines()[-1]


def _frames(path):
    import cv2

    capture = cv2.VideoCapture(path)
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield frame
    finally:
        capture.release()


def _compute(path):
    import cv2
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(MODEL, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    covs, bboxes, sizes = [], [], []
    for frame in _frames(path):
        sizes.append((frame.shape[1], frame.shape[0]))
        rgb = cv2.cvtColor(cv2.resize(frame, (NET_W, NET_H)), cv2.COLOR_BGR2RGB)
        x = (rgb.astype(np.float32) / np.float32(255)).transpose(2, 0, 1)[None]
        out = dict(zip(names, session.run(None, {"input_1": np.ascontiguousarray(x)})))
        covs.append(out["output_cov/Sigmoid"][0])
        bboxes.append(out["output_bbox/BiasAdd"][0])
    return np.stack(covs), np.stack(bboxes), np.asarray(sizes)


def load():
    """(cov [F, 3, 34, 60], bbox [F, 12, 34, 60], source sizes [F, 2] as width, height)."""
    with open(MODEL, "rb") as f:
        model_id = hashlib.sha256(f.read()).hexdigest()[:16]
    cache = os.path.join(CACHE_DIR, f"vtest_outputs_{model_id}.npz")  # a new model, new outputs
    if not os.path.exists(cache):
        cov, bbox, sizes = _compute(vtest_path())
        os.makedirs(CACHE_DIR, exist_ok=True)
        tmp = f"{cache}.{os.getpid()}.tmp.npz"  # interpreters may fill the cache side by side
        np.savez(tmp, cov=cov, bbox=bbox, sizes=sizes)
        os.replace(tmp, cache)
    with np.load(cache) as data:
        return data["cov"], data["bbox"], data["sizes"]

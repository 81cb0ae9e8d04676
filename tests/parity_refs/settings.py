"""PeopleNet's published post-processing settings in each tool, as reference and edged parameters.

- DeepStream: deepstream_tao_apps
  ``configs/nvinfer/peoplenet_tao/config_infer_primary_peoplenet.txt``
  (NMS: ``[class-attrs-all] topk=20 nms-iou-threshold=0.5 pre-cluster-threshold=0.2``,
  ``[class-attrs-0] pre-cluster-threshold=0.4``; its DBSCAN block, commented out there:
  ``cluster-mode=1``, ``detected-min-w/h=4``, ``minBoxes=3``, ``eps=0.7``, and
  ``[class-attrs-1] pre-cluster-threshold=0.05 eps=0.7 dbscan-min-score=0.5``).
- TAO: tao-toolkit-triton-apps ``clustering_config_peoplenet.prototxt`` (coverage 0.005,
  minimum height 4, DBSCAN eps 0.3, min_samples 0.05, confidence 0.9 / 0.9 / 0.7); its NMS
  run changes only ``clustering_algorithm`` and leaves the NMS thresholds unset (0.3, 0.1).
docs/parity.md gives the same settings as config keys of each tool and of edged.
"""

DECODE = {"stride": 16, "norm": 35.0, "offset": 0.5}


def _cls(**kw):
    base = {
        "iou_threshold": 0.5,
        "post_threshold": 0.0,
        "top_k": -1,
        "eps": 0.7,
        "min_boxes": 1,
        "min_score": 0.0,
        "min_cluster_height": 0.0,
    }
    base.update(kw)
    return base


def settings(compat, method):
    """(per-class parameter dicts for person, bag, face; decode dict with min_w, min_h)."""
    if compat == "deepstream" and method == "nms":
        per = [_cls(method="nms", threshold=t, top_k=20) for t in (0.4, 0.2, 0.2)]
        return per, dict(DECODE, min_w=0.0, min_h=0.0)
    if compat == "deepstream" and method == "dbscan":
        common = dict(method="dbscan", top_k=20, eps=0.7, min_boxes=3)
        per = [
            _cls(threshold=0.4, **common),
            _cls(threshold=0.05, min_score=0.5, **common),
            _cls(threshold=0.2, **common),
        ]
        return per, dict(DECODE, min_w=4.0, min_h=4.0)
    if compat == "tao" and method == "dbscan":
        per = [
            _cls(
                method="dbscan",
                threshold=0.005,
                eps=0.3,
                min_boxes=1,
                min_cluster_height=4.0,
                post_threshold=t,
            )  # fmt: skip
            for t in (0.9, 0.9, 0.7)
        ]
        return per, dict(DECODE, min_w=0.0, min_h=0.0)
    if compat == "tao" and method == "nms":
        per = [
            _cls(
                method="nms",
                threshold=0.005,
                iou_threshold=0.3,
                post_threshold=0.1,
                min_cluster_height=4.0,
            )  # fmt: skip
            for _ in range(3)
        ]
        return per, dict(DECODE, min_w=0.0, min_h=0.0)
    raise ValueError((compat, method))


def edged_postprocessor(compat, method, labels=("person", "bag", "face")):
    """edged's DetectNetV2Postprocessor with the same settings."""

    per, dec = settings(compat, method)
    return edged_from(compat, per, dec, labels)


def edged_from(compat, per, dec, labels):
    from edged.tasks.clustering import ClusterParams
    from edged.tasks.detection import DecodeParams, DetectNetV2Postprocessor

    decode = DecodeParams(
        stride=dec["stride"],
        bbox_norm=dec["norm"],
        offset=dec["offset"],
        thresholds=tuple(p["threshold"] for p in per),
        min_width=dec["min_w"],
        min_height=dec["min_h"],
    )
    clustering = [
        ClusterParams(
            method=p["method"],
            iou_threshold=p["iou_threshold"],
            top_k=p["top_k"],
            eps=p["eps"],
            min_boxes=p["min_boxes"],
            dbscan_min_score=p["min_score"],
            post_threshold=p["post_threshold"],
            min_cluster_height=p["min_cluster_height"],
        )
        for p in per
    ]
    return DetectNetV2Postprocessor(labels, decode, clustering, compat)

"""The one detection pipeline (decode, clip, per-class NMS, back to image pixels), for every level count the
registry has: its traced form (inside the exported graphs) equals its eager form, flat raw outputs split at the
config's level count; both tasks name an unnamed class the same way. :func:`assert_served_like` is the served
detector's check on each backend (tests/test_detect_backends.py, tests/test_executorch.py)."""

import numpy as np
import pytest
import torch

import effnet
from effnet.detect import Predictor
from effnet.detect.boxes import feature_sizes
from effnet.detect.pipeline import DetectionPipeline, level_count
from effnet.models.nets.detector_config import DETECTOR_VARIANTS, detector_config
from effnet.results import label_names

LEVEL_COUNTS = sorted({level_count(detector_config(name)) for name in DETECTOR_VARIANTS})


def _raw_outputs(config, seed: int = 0):
    """Random raw outputs of the right shapes for each level: logits around -4 (a few score over 0.05) and box
    codes of a trained model's size."""
    g = torch.Generator().manual_seed(seed)
    sizes = feature_sizes(config.resolution, config.resolution, config.max_level)[config.min_level:]
    a = config.num_anchors
    class_out = [torch.randn(1, a * config.num_classes, h, w, generator=g) * 1.5 - 4 for h, w in sizes]
    box_out = [torch.randn(1, a * 4, h, w, generator=g) * 0.2 for h, w in sizes]
    return class_out, box_out


def test_the_registry_has_five_and_six_levels():
    assert LEVEL_COUNTS == [5, 6]  # P3-P7, and D7x's P3-P8


@pytest.mark.parametrize("levels", LEVEL_COUNTS)
def test_graph_form_equals_the_eager_pipeline(levels):
    name = next(n for n in DETECTOR_VARIANTS if level_count(detector_config(n)) == levels)
    config = detector_config(name, 3).replace(resolution=2 ** detector_config(name).max_level)
    pipeline = DetectionPipeline.for_input(config)
    assert pipeline.levels == levels and (pipeline.height, pipeline.width) == (config.resolution,) * 2
    names = pipeline.output_names()
    assert len(names) == 2 * levels and names[0] == "class_p3" and names[-1] == f"box_p{config.max_level}"
    class_out, box_out = _raw_outputs(config)
    hw = torch.tensor([config.resolution * 0.75, float(config.resolution)])  # a landscape photo, letterboxed
    (eager,) = pipeline(class_out, box_out, clip_sizes=[hw])
    assert 5 < len(eager.scores) <= pipeline.max_detections
    assert float(eager.boxes[:, 3].max()) <= float(hw[0])  # clipped to the photo, not the padding below it
    boxes, scores, labels = pipeline.graph(class_out, box_out, hw)
    assert torch.equal(labels, eager.labels) and torch.allclose(scores, eager.scores)
    assert torch.allclose(boxes, eager.boxes, atol=1e-4)
    (flat,) = pipeline.flat([*class_out, *box_out], clip_sizes=[hw])  # an exported program's outputs
    assert torch.equal(flat.boxes, eager.boxes) and torch.equal(flat.labels, eager.labels)
    with pytest.raises(ValueError, match=f"expected {2 * levels} raw outputs"):
        pipeline.split([*class_out, *box_out][1:])
    (scaled,) = pipeline(class_out, box_out, scales=[0.5], clip_sizes=[hw])  # back to the photo's own pixels
    assert torch.allclose(scaled.boxes, eager.boxes / 0.5)


def test_a_stricter_threshold_keeps_exactly_the_boxes_over_it():
    """What the served detector relies on to run a batch at its lowest threshold: NMS keeps boxes greedily by
    score, so filtering a low threshold's result gives exactly a higher threshold's."""
    config = detector_config("efficientdet_lite0", 3).replace(resolution=128)
    class_out, box_out = _raw_outputs(config, seed=1)
    (low,) = DetectionPipeline.for_input(config, score_threshold=0.4)(class_out, box_out)
    (high,) = DetectionPipeline.for_input(config, score_threshold=0.6)(class_out, box_out)
    keep = low.scores > 0.6
    assert 0 < len(high.scores) < len(low.scores)
    assert torch.equal(low.boxes[keep], high.boxes) and torch.equal(low.labels[keep], high.labels)


def test_unnamed_classes_read_the_same_for_both_tasks():
    from effnet.models.zoo.imagenet import class_names_for

    detector = effnet.create_model("efficientdet_lite0", num_classes=3)
    classifier = effnet.create_model("efficientnet_lite0", num_classes=3)
    assert Predictor(detector).class_names == class_names_for(classifier.config) == ("class_0", "class_1", "class_2")
    assert label_names(("cat", "dog"), 2) == ("cat", "dog")


def _between_middle_scores(scores, default: float) -> float:
    ranked = sorted(scores.tolist())
    if len(ranked) < 2:
        return default
    k = len(ranked) // 2
    return (ranked[k - 1] + ranked[k]) / 2


def assert_served_like(served, images, want, threshold: float = 0.1, box_tolerance: float = 1e-2) -> None:
    """``effnet serve``'s detector gives the Predictor's boxes (``want``, at ``threshold``), each request at its
    own threshold though they run as one batch, in effnet.results' schema."""
    # the first at the Predictor's threshold, the others halfway between their two middle scores: about half their
    # boxes go, and no score sits on the threshold, where an exported graph's last-digit difference would decide
    thresholds = [threshold] + [_between_middle_scores(w["scores"], threshold) for w in want[1:]]
    found = served.run_batch([served.preprocess(im, score_threshold=t) for im, t in zip(images, thresholds)])
    for f, w, t, image in zip(found, want, thresholds, images):
        keep = w["scores"] > t
        assert f["labels"] == w["labels"][keep].tolist() and (f["width"], f["height"]) == image.size
        assert np.abs(np.array(f["boxes"]).reshape(-1, 4) - w["boxes"][keep].numpy()).max(initial=0) < box_tolerance
        answer = served.answer(f, path="photo.jpg")
        assert [d["label"] for d in answer["detections"]] == [n for n, k in zip(w["names"], keep) if k]
    assert any(0 < len(f["scores"]) < len(w["scores"]) for f, w in zip(found, want))  # a threshold of its own

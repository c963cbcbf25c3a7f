"""Anchors, box codes, anchor labelling, loss and post-processing against effdet 0.4.1's implementation."""

import pytest
import torch

import effnet
from effnet.detect.boxes import (
    anchors_for,
    decode,
    encode,
    flatten_outputs,
    label_anchors,
    postprocess,
)
from effnet.detect.loss import detection_loss

effdet = pytest.importorskip("effdet")
from effdet.anchors import AnchorLabeler, Anchors
from effdet.config import get_efficientdet_config
from effdet.loss import DetectionLoss


def effdet_config(name, size, num_classes=4):
    c = get_efficientdet_config(name)
    c.image_size, c.num_classes = (size, size), num_classes
    return c


@pytest.mark.parametrize("ours,theirs,size", [("efficientdet_lite0", "tf_efficientdet_lite0", 200),
                                              ("efficientdet_d7", "tf_efficientdet_d7", 256)])
def test_anchors_equal_effdet(ours, theirs, size):
    config = effnet.models.nets.detector_config.detector_config(ours)
    a = Anchors.from_config(effdet_config(theirs, size)).boxes  # (y0, x0, y1, x1)
    assert torch.equal(anchors_for(config, size, size), a[:, [1, 0, 3, 2]])


def test_encode_decode_roundtrip():
    g = torch.Generator().manual_seed(0)
    anchors = anchors_for(effnet.models.nets.detector_config.detector_config("efficientdet_lite0"), 128, 128)[:500]
    xy = torch.rand(500, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(500, 2, generator=g) * 60], 1)
    assert torch.allclose(decode(encode(boxes, anchors), anchors), boxes, atol=1e-3)


def test_every_object_gets_an_anchor_even_below_half_iou():
    config = effnet.models.nets.detector_config.detector_config("efficientdet_lite0")
    anchors = anchors_for(config, 128, 128)
    gt = torch.tensor([[10.0, 10.0, 40.0, 40.0], [60.0, 70.0, 63.0, 100.0]])  # the second: thin, IoU < 0.5
    matched, codes = label_anchors(anchors, gt, torch.tensor([0, 1]))
    assert (matched == 0).sum() >= 1 and (matched == 1).sum() == 1
    pos = matched >= 0
    assert torch.allclose(decode(codes[pos], anchors[pos]), gt[matched[pos]], atol=1e-3)


def test_loss_equals_effdet_focal_and_huber():
    size, classes = 128, 4
    ec = effdet_config("tf_efficientdet_lite0", size, classes)
    model = effnet.create_model("efficientdet_lite0", num_classes=classes)
    g = torch.Generator().manual_seed(0)
    cls_out = [torch.randn(2, 9 * classes, s, s, generator=g) for s in (16, 8, 4, 2, 1)]
    box_out = [torch.randn(2, 36, s, s, generator=g) * 0.1 for s in (16, 8, 4, 2, 1)]
    targets = [dict(boxes=torch.tensor([[10.0, 20.0, 50.0, 70.0], [60.0, 60.0, 120.0, 100.0]]),
                    labels=torch.tensor([1, 3])),
               dict(boxes=torch.tensor([[5.0, 5.0, 30.0, 30.0]]), labels=torch.tensor([0]))]
    ours = detection_loss(cls_out, box_out, targets, model.config, (size, size))
    labeler = AnchorLabeler(Anchors.from_config(ec), classes, match_threshold=0.5)
    gt_boxes = [t["boxes"][:, [1, 0, 3, 2]] for t in targets]  # effdet: yxyx, classes from 1
    cls_t, box_t, npos = labeler.batch_label_anchors(gt_boxes, [t["labels"] + 1 for t in targets])
    theirs = DetectionLoss(ec)(cls_out, box_out, cls_t, box_t, npos)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), (a, b)


def test_postprocess_recovers_a_confident_box():
    config = effnet.models.nets.detector_config.detector_config("efficientdet_lite0", num_classes=3)
    anchors = anchors_for(config, 128, 128)
    gt = torch.tensor([[30.0, 40.0, 70.0, 90.0]])
    matched, codes = label_anchors(anchors, gt, torch.tensor([2]))
    cls = torch.full((1, anchors.shape[0], 3), -8.0)
    cls[0, matched >= 0, 2] = 4.0
    box = codes[None]
    det = postprocess(cls, box, anchors, (128, 128), scales=[0.5])[0]
    assert det.labels[0] == 2 and det.scores[0] > 0.9
    assert torch.allclose(det.boxes[0], gt[0] / 0.5, atol=1e-2)
    assert (det.scores > 0.5).sum() == 1  # NMS merged the duplicates
    flat_cls, flat_box = flatten_outputs([torch.zeros(1, 27, 2, 2)], [torch.zeros(1, 36, 2, 2)], 3)
    assert flat_cls.shape == (1, 36, 3) and flat_box.shape == (1, 36, 4)


def test_boxes_the_clip_squeezes_to_a_line_are_dropped_before_output_and_drawing(tmp_path):
    """A landscape photo is letterboxed with padding below it; anchors there decode to boxes that the clip to the
    photo squeezes onto its bottom edge (zero height: ``effnet detect predict`` drew such a line). An untrained
    detector at threshold 0 scores them as it scores everything else, so they were real candidates."""
    import numpy as np
    import skimage.data
    from PIL import Image
    from torchvision.ops import clip_boxes_to_image

    from effnet.detect import Predictor
    from effnet.detect.boxes import has_area
    from effnet.detect.pipeline import DetectionPipeline
    from effnet.detect.predict import draw_detections, predict_paths

    model = effnet.create_model("efficientdet_lite0", num_classes=3).eval()
    path = tmp_path / "strip.png"
    Image.fromarray(np.asarray(skimage.data.astronaut())[100:300]).save(path)  # 512 x 200
    predictor = Predictor(model, score_threshold=0.0, max_detections=300, resolution=128)
    x, scales, valid = predictor.preprocess([Image.open(path).convert("RGB")])
    with torch.no_grad():
        class_out, box_out = model(x)

    # the candidates as decoded and clipped (torchvision's clip): many are lines on the photo's bottom edge
    cls, box = flatten_outputs(class_out, box_out, 3)
    anchors = anchors_for(model.config, 128, 128)
    idx = cls[0].reshape(-1).topk(5000).indices // 3
    clipped = clip_boxes_to_image(decode(box[0, idx], anchors[idx]), valid[0])
    lines = clipped[~has_area(clipped)]
    assert len(lines) > 100 and torch.allclose(lines[:, 1], torch.tensor(valid[0][0]))

    pipeline = DetectionPipeline.for_input(predictor.config, score_threshold=0.0, max_detections=300)
    (eager,) = pipeline(class_out, box_out, clip_sizes=valid)
    assert len(eager.boxes) == 300 and has_area(eager.boxes).all()  # their slots went to boxes with an area
    # the exported graphs' form (its order among tied scores, an untrained head's, is its own)
    boxes, _, _ = pipeline.graph(class_out, box_out, torch.tensor(valid[0]))
    assert len(boxes) == 300 and has_area(boxes).all()

    (pred,) = predict_paths(predictor, [path])  # `effnet detect predict`'s JSON, then its drawing
    drawn = torch.tensor([d["box"] for d in pred["detections"]])
    assert len(drawn) == 300 and (drawn[:, 2] > drawn[:, 0]).all() and (drawn[:, 3] > drawn[:, 1]).all()
    assert float(drawn[:, 3].max()) <= 200 and draw_detections(path, pred).size == (512, 200)

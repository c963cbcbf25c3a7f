"""COCO evaluation end to end: the ground truth itself, pushed through the detector's output layout, decoding,
NMS, the letterbox scale and the category-id mapping, must score AP 1.0; and `effnet.load` / `list_models`
know the detectors."""

import json

import numpy as np
import torch
from PIL import Image
from torch import nn

import effnet
from effnet.data.coco import DetectionSamples, read_coco_split
from effnet.detect.boxes import anchors_for, feature_sizes, label_anchors
from effnet.detect.evaluate import coco_metrics, evaluate_detector


def _split(tmp_path):
    """Three images of different sizes (so different letterbox scales), non-contiguous category ids."""
    rng = np.random.default_rng(0)
    (tmp_path / "val").mkdir()
    images, anns = [], []
    for i, (w, h) in enumerate([(200, 150), (96, 180), (320, 240)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / "val" / f"{i}.png")
        images.append(dict(id=10 + i, file_name=f"{i}.png", width=w, height=h))
        for k in range(3):
            x, y = float(rng.integers(0, w - 40)), float(rng.integers(0, h - 40))
            size = float(rng.integers(16, 40))
            anns.append(dict(id=len(anns) + 1, image_id=10 + i, category_id=[7, 3, 12][(i + k) % 3],
                             bbox=[x, y, size, size * 0.8], area=size * size * 0.8, iscrowd=0))
    cats = [dict(id=12, name="c"), dict(id=3, name="a"), dict(id=7, name="b")]
    (tmp_path / "instances_val.json").write_text(json.dumps(dict(images=images, annotations=anns, categories=cats)))
    return read_coco_split(tmp_path / "instances_val.json", tmp_path / "val", print)


class PerfectDetector(nn.Module):
    """Returns, batch after batch, the raw per-level outputs that encode the letterboxed ground truth."""

    def __init__(self, config, batches):
        super().__init__()
        self.config, self.batches = config, list(batches)

    def forward(self, x):
        targets = self.batches.pop(0)
        c = self.config
        anchors = anchors_for(c, x.shape[-2], x.shape[-1])
        cls = torch.full((x.shape[0], anchors.shape[0], c.num_classes), -10.0)
        box = torch.zeros(x.shape[0], anchors.shape[0], 4)
        for i, t in enumerate(targets):
            matched, codes = label_anchors(anchors, t["boxes"], t["labels"])
            pos = matched >= 0
            cls[i, pos, t["labels"][matched[pos]]] = 5.0
            box[i] = codes
        return self._unflatten(cls, x.shape[-2:]), self._unflatten(box, x.shape[-2:])

    def _unflatten(self, flat, size):  # inverse of boxes.flatten_outputs
        out, start = [], 0
        for h, w in feature_sizes(*size, self.config.max_level)[self.config.min_level:]:
            n = h * w * self.config.num_anchors
            level = flat[:, start:start + n].reshape(flat.shape[0], h, w, -1).permute(0, 3, 1, 2)
            out.append(level)
            start += n
        return out


def test_ground_truth_as_predictions_scores_ap_one(tmp_path):
    split = _split(tmp_path)
    results = [dict(image_id=img.id, category_id=split.categories[lab]["id"], bbox=[x0, y0, x1 - x0, y1 - y0],
                    score=1.0) for img in split.images for (x0, y0, x1, y1), lab in zip(img.boxes, img.labels)]
    assert coco_metrics(split, results)["AP"] == 1.0

    config = effnet.create_model("efficientdet_lite0", num_classes=3).config.replace(resolution=128)
    ds = DetectionSamples(split, config.mean, config.std, 128, train=False)
    batches = [[ds[i][1] for i in range(j, min(j + 2, len(ds)))] for j in range(0, len(ds), 2)]
    res = evaluate_detector(PerfectDetector(config, batches), split, 128, batch_size=2)
    assert res["AP"] > 0.99 and res["AP50"] == 1.0 and res["images"] == 3


def test_load_and_list_models_know_detectors(tmp_path):
    names = effnet.list_models()
    assert "efficientnet_b0" in names and "efficientdet_d0" in names and "efficientdet_lite4" in names
    assert effnet.list_models("efficientdet_lite") == [
        "efficientdet_lite0", "efficientdet_lite1", "efficientdet_lite2", "efficientdet_lite3", "efficientdet_lite3x",
        "efficientdet_lite4"]
    model = effnet.create_model("efficientdet_lite0", num_classes=2).eval()
    model.config = model.config.replace(class_names=("x", "y"), resolution=128)
    (tmp_path / "run").mkdir()
    effnet.save(model, tmp_path / "run" / "model.safetensors")
    for source in (tmp_path / "run" / "model.safetensors", tmp_path / "run"):
        again = effnet.load(source).eval()
        assert type(again).__name__ == "EfficientDet" and again.config == model.config
    classifier = effnet.create_model("efficientnet_lite0", num_classes=4)
    effnet.save(classifier, tmp_path / "cls.safetensors")
    assert effnet.load(tmp_path / "cls.safetensors").config == classifier.config

"""COCO-layout detection data: validation of annotations, corrupt images, box-preserving augmentation."""

import json

import numpy as np
import torch
from PIL import Image

from effnet.data.coco import DetectionSamples, load_coco, read_coco_split
from tests.conftest import run_cli


def _write(root, split, images, anns, cats=({"id": 1, "name": "square"}, {"id": 2, "name": "bar"})):
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(parents=True, exist_ok=True)
    data = dict(images=images, annotations=anns, categories=list(cats))
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))


def _square_image(path, w=120, h=80, box=(30, 20, 60, 50)):
    arr = np.zeros((h, w, 3), np.uint8)
    x0, y0, x1, y1 = box
    arr[y0:y1, x0:x1] = 255
    Image.fromarray(arr).save(path)


def test_bad_annotations_are_skipped_with_one_warning_each(tmp_path):
    (tmp_path / "train").mkdir()
    _square_image(tmp_path / "train" / "a.png")
    (tmp_path / "train" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    images = [dict(id=1, file_name="a.png", width=120, height=80),
              dict(id=2, file_name="gone.png", width=120, height=80),
              dict(id=3, file_name="broken.jpg", width=120, height=80)]
    anns = [dict(id=1, image_id=1, category_id=1, bbox=[30, 20, 30, 30]),  # good
            dict(id=2, image_id=1, category_id=1, bbox=[10, 10, 0, 5]),  # zero width
            dict(id=3, image_id=1, category_id=2, bbox=[10, 10, 5, -3]),  # negative height
            dict(id=4, image_id=1, category_id=1, bbox=[100, 60, 50, 50]),  # outside the image
            dict(id=5, image_id=1, category_id=7, bbox=[1, 1, 5, 5]),  # unknown category
            dict(id=6, image_id=2, category_id=1, bbox=[1, 1, 5, 5]),  # missing image file
            dict(id=7, image_id=9, category_id=1, bbox=[1, 1, 5, 5]),  # no such image id
            dict(id=8, image_id=3, category_id=2, bbox=[1, 1, 5, 5])]  # corrupt image
    _write(tmp_path, "train", images, anns)
    warnings = []
    split = read_coco_split(tmp_path / "annotations" / "instances_train.json", tmp_path / "train", warnings.append)
    assert [i.id for i in split.images] == [1]
    assert split.images[0].boxes == [[30.0, 20.0, 60.0, 50.0]] and split.images[0].labels == [0]
    reasons = dict(split.skipped_annotations)
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8]
    assert "zero or negative size" in reasons[2] and "zero or negative size" in reasons[3]
    assert "outside the image" in reasons[4] and "unknown category" in reasons[5]
    assert all("missing image file" in reasons[k] for k in (6, 7, 8))
    assert len(split.skipped_images) == 2  # gone.png (missing) and broken.jpg (corrupt)
    ann_warnings = [w for w in warnings if "instances_train.json: annotation" in w]
    assert len(ann_warnings) == 7 and sum("broken.jpg" in w for w in warnings) == 1
    assert split.class_names == ("square", "bar")
    gt = split.coco_ground_truth()
    assert gt["annotations"][0]["bbox"] == [30.0, 20.0, 30.0, 30.0] and len(gt["images"]) == 1


def test_flip_and_scale_jitter_keep_boxes_on_the_object(tmp_path):
    (tmp_path / "train").mkdir()
    box = (30, 20, 60, 50)
    _square_image(tmp_path / "train" / "a.png", box=box)
    _write(tmp_path, "train", [dict(id=1, file_name="a.png", width=120, height=80)],
           [dict(id=1, image_id=1, category_id=1, bbox=[30, 20, 30, 30])])
    split = read_coco_split(tmp_path / "annotations" / "instances_train.json", tmp_path / "train", print)
    ds = DetectionSamples(split, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 96, train=True, hflip=0.5, seed=3)
    seen_scales = set()
    for key in range(12):  # different epochs/draws of flip and scale
        x, target = ds[key]
        assert x.shape == (3, 96, 96)
        (x0, y0, x1, y1), = target["boxes"].tolist()
        seen_scales.add(round(x1 - x0))
        inside = x[0, round(y0) + 2:round(y1) - 2, round(x0) + 2:round(x1) - 2]
        assert inside.numel() > 0 and inside.min() > 0.9  # the box still covers the white square
        white = (x[0] > 0.5).nonzero()
        assert abs(white[:, 1].min().item() - x0) <= 2 and abs(white[:, 1].max().item() + 1 - x1) <= 2
    assert len(seen_scales) > 3  # the jitter really changed the scale
    x2, _ = ds[5]
    assert torch.equal(ds[5][0], x2)  # reproducible from (seed, epoch, index)


def test_detect_digits_command_writes_the_coco_layout(tmp_path):
    out = tmp_path / "dd"
    proc = run_cli("data", "detect-digits", str(out), "--count", "8")
    assert "8 train images" in proc.stdout and "2 val images" in proc.stdout
    train, val = load_coco(out, log=lambda m: None)
    assert len(train.images) == 8 and len(val.images) == 2
    assert train.class_names == tuple(str(d) for d in range(10))
    assert not train.skipped_annotations and sum(len(i.boxes) for i in train.images) >= 8
    img = Image.open(train.images[0].path)
    assert img.size == (train.images[0].width, train.images[0].height)

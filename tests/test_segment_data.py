"""Semantic-segmentation data: the segment-digits set, both folder layouts, bad masks, mask-preserving augmentation."""

import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from effnet.data.masks import (
    IGNORE_INDEX, VOC_CLASSES, SegmentationSamples, letterbox_size, load_segmentation, mask_image, read_mask,
)
from effnet.data.segment_digits import CLASS_NAMES, write_segment_digits
from effnet.errors import DataError, UsageError
from tests.conftest import ROOT, run_cli

MAX_SIZE = 112  # write_segment_digits' default largest tile


@pytest.fixture(scope="module")
def digits_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("seg") / "sd"
    counts = write_segment_digits(out, train=6, val=3, seed=0)
    return out, counts


def _pairs(root, split):
    names = sorted(os.listdir(root / split / "images"))
    return [(root / split / "images" / n, root / split / "masks" / (n[:-4] + ".png")) for n in names]


def test_segment_digits_writes_the_layout_with_exact_masks(digits_set):
    out, counts = digits_set
    assert (out / "classes.txt").read_text().splitlines() == ["background", *map(str, range(10))]
    assert counts["train_images"] == 6 and counts["val_images"] == 3
    assert counts["train_digits"] >= 6 and counts["val_digits"] >= 3 and 0 < counts["digit_pixel_fraction"] < 0.5
    inks, rings = [], []
    for split, n in (("train", 6), ("val", 3)):
        pairs = _pairs(out, split)
        assert len(pairs) == n and all(m.is_file() for _, m in pairs)
        for image_path, mask_path in pairs:
            image, mask_file = Image.open(image_path), Image.open(mask_path)
            assert image.format == "JPEG" and 224 <= min(image.size) and max(image.size) <= 320
            assert mask_file.mode == "P" and mask_file.size == image.size
            assert mask_file.getpalette()[3:6] == [128, 0, 0]  # VOC's colour of class 1
            mask = np.asarray(mask_file)
            assert mask.max() <= 10 and (mask > 0).any()
            # the rebuild: each blob of labelled pixels lies inside one tile -- a square of at most MAX_SIZE px
            # holding one digit -- and blobs of different tiles never touch (tiles are 4 px apart)
            blobs, _ = ndimage.label(ndimage.binary_dilation(mask > 0))
            for k, box in enumerate(ndimage.find_objects(blobs), start=1):
                assert box[0].stop - box[0].start <= MAX_SIZE + 2 and box[1].stop - box[1].start <= MAX_SIZE + 2
                classes = np.unique(mask[(blobs == k) & (mask > 0)])
                assert len(classes) == 1, classes
            # the labels follow the ink: labelled pixels are dark pen, the background 2-3 px around them lighter
            # (mostly paper; the photo where a digit touches its tile's edge)
            grey = np.asarray(image.convert("L"), dtype=np.float32)
            ink = mask > 0
            ring = ndimage.binary_dilation(ink, iterations=3) & ~ndimage.binary_dilation(ink)
            assert grey[ink].mean() < 110 and grey[ring].mean() > grey[ink].mean() + 5
            inks.append(grey[ink])
            rings.append(grey[ring])
    assert np.concatenate(rings).mean() > np.concatenate(inks).mean() + 40
    hints = (out / "effnet_dataset.json").read_text()
    assert '"segment-digits"' in hints and '"resolution": 256' in hints and '"hflip": 0.0' in hints


def test_val_has_its_own_stream_and_the_seed_changes_the_set(digits_set, tmp_path):
    out, _ = digits_set
    fewer = tmp_path / "fewer"
    write_segment_digits(fewer, train=2, val=3, seed=0)
    other = tmp_path / "other"
    write_segment_digits(other, train=2, val=3, seed=1)
    for (_, a), (_, b), (_, c) in zip(_pairs(out, "val"), _pairs(fewer, "val"), _pairs(other, "val")):
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))  # train's count: no effect
        assert not np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(c)))
    assert not np.array_equal(np.asarray(Image.open(_pairs(fewer, "train")[0][1])),
                              np.asarray(Image.open(_pairs(other, "train")[0][1])))


def test_segment_digits_folder_appears_whole_or_not_at_all(tmp_path):
    out = tmp_path / "sd"
    code = (f"from effnet.data.segment_digits import write_segment_digits; "
            f"write_segment_digits({str(out)!r}, train=5000, val=10)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline, written = time.time() + 300, []
    while time.time() < deadline and len(written) < 3 and proc.poll() is None:
        written = list(tmp_path.glob(".sd.*/train/images/*.jpg"))
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(written) >= 3 and not out.exists()  # killed mid-write: only the temporary sibling
    write_segment_digits(out, train=2, val=1)  # a new write sweeps the dead writer's temporary away
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sd"]
    with pytest.raises(UsageError, match="exists and is not an empty folder"):
        write_segment_digits(out, train=2, val=1)
    with pytest.raises(UsageError, match="--count must be 1 to"):
        write_segment_digits(tmp_path / "bad", train=0, val=1)
    assert not (tmp_path / "bad").exists()


def test_load_segmentation_reads_effnet_layout(digits_set):
    out, _ = digits_set
    warnings = []
    train, val = load_segmentation(out, log=warnings.append)
    assert warnings == [] and train.skipped == [] and val.skipped == []
    assert train.class_names == CLASS_NAMES and len(train.class_names) == 11
    assert [(str(i), str(m)) for i, m in _pairs(out, "train")] == train.samples and len(val.samples) == 3
    mask = read_mask(train.samples[0][1])
    assert mask.dtype == np.uint8 and mask.shape == Image.open(train.samples[0][0]).size[::-1]


def _voc_from(src, dst, boundary=True):
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (dst / sub).mkdir(parents=True)
    for split in ("train", "val"):
        ids = []
        for image, mask in _pairs(src, split):
            name = f"2007_{split}_{image.stem}"
            shutil.copy(image, dst / "JPEGImages" / f"{name}.jpg")
            values = np.asarray(Image.open(mask)).copy()
            if boundary:  # VOC outlines its objects with 255, the pixels nobody scores
                values[ndimage.binary_dilation(values > 0) & (values == 0)] = IGNORE_INDEX
            mask_image(values).save(dst / "SegmentationClass" / f"{name}.png")
            ids.append(name)
        (dst / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n\n")
    return dst


def test_load_segmentation_reads_voc_layout(digits_set, tmp_path):
    voc = _voc_from(digits_set[0], tmp_path / "VOC2012")
    warnings = []
    train, val = load_segmentation(voc, log=warnings.append)
    assert warnings == [] and len(train.samples) == 6 and len(val.samples) == 3
    assert train.class_names == VOC_CLASSES and len(VOC_CLASSES) == 21
    image, mask = train.samples[0]
    assert image.endswith(".jpg") and "JPEGImages" in image and "SegmentationClass" in mask
    assert IGNORE_INDEX in read_mask(mask)
    (voc / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    listing = voc / "ImageSets" / "Segmentation" / "train.txt"
    listing.write_text(listing.read_text() + "../../etc/passwd\n")
    warnings.clear()
    train, _ = load_segmentation(voc, log=warnings.append)
    assert train.class_names == CLASS_NAMES and len(train.samples) == 6
    assert len(warnings) == 1 and "train.txt:" in warnings[0] and "is not a file name" in warnings[0]
    assert len(train.skipped) == 1
    (voc / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(DataError, match="val.txt: no such file"):
        load_segmentation(voc)


def test_layout_errors_are_one_line(digits_set, tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError) as exc:
        load_segmentation(tmp_path / "nothing")
    message = str(exc.value)
    assert "\n" not in message and "images" in message and "JPEGImages" in message
    no_names = tmp_path / "no_names"
    shutil.copytree(digits_set[0], no_names)
    (no_names / "classes.txt").unlink()
    with pytest.raises(DataError, match="classes.txt: no such file: write the class names there"):
        load_segmentation(no_names)
    (no_names / "classes.txt").write_text("only\n")
    with pytest.raises(DataError, match="1 class names"):
        load_segmentation(no_names)
    (no_names / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    shutil.rmtree(no_names / "val" / "masks")
    with pytest.raises(DataError, match="masks: no such folder"):
        load_segmentation(no_names)


def test_bad_masks_are_skipped_with_one_warning_each(digits_set, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(digits_set[0], root)
    pairs = _pairs(root, "train")
    (_, size_mask), (_, index_mask), (_, broken), (_, missing), (_, rgb), (bad_image, _) = pairs
    first = np.asarray(Image.open(size_mask))
    mask_image(first[:-3]).save(size_mask)  # three rows short of its image
    values = np.asarray(Image.open(index_mask)).copy()
    values[0, 0] = 11  # past the 11 classes (0-10)
    mask_image(values).save(index_mask)
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    missing.unlink()
    Image.open(rgb).convert("RGB").save(rgb)
    bad_image.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    val_pairs = _pairs(root, "val")
    ignore = np.asarray(Image.open(val_pairs[0][1])).copy()
    ignore[:4] = IGNORE_INDEX  # 255 is not a class but allowed
    Image.fromarray(ignore, "L").save(val_pairs[0][1])  # greyscale "L": values are class indices too
    sixteen = np.asarray(Image.open(val_pairs[1][1])).astype(np.uint16)
    Image.fromarray(sixteen).save(val_pairs[1][1])  # 16-bit greyscale
    assert Image.open(val_pairs[1][1]).mode.startswith("I")

    warnings = []
    with pytest.raises(DataError, match="no usable image and mask pairs"):
        load_segmentation(root, log=warnings.append)  # every train sample is bad
    expected = {str(size_mask): "differs from its image's", str(index_mask): "class index 11 is past the 11 classes",
                str(broken): "cannot read mask", str(missing): "missing mask file", str(rgb): "mask is mode RGB",
                str(bad_image): "cannot read image"}
    assert len(warnings) == len(expected)
    for path, reason in expected.items():
        hits = [w for w in warnings if path in w]
        assert len(hits) == 1 and hits[0].startswith(f"warning: skipping {path}: ") and reason in hits[0], hits

    mask_image(first).save(size_mask)  # one train sample made good again
    warnings.clear()
    train, val = load_segmentation(root, log=warnings.append)
    assert train.samples == [(str(pairs[0][0]), str(size_mask))] and len(warnings) == 5
    assert sorted(p for p, _ in train.skipped) == sorted(p for p in expected if p != str(size_mask))
    assert len(val.samples) == 3 and val.skipped == []
    assert read_mask(val_pairs[0][1])[:4].min() == IGNORE_INDEX
    assert np.array_equal(read_mask(val_pairs[1][1]), np.asarray(Image.open(_pairs(digits_set[0], "val")[1][1])))
    with pytest.raises(DataError, match="cannot read mask"):
        read_mask(broken)

    warnings.clear()
    with pytest.raises(DataError):
        load_segmentation(root, log=warnings.append, max_pixels=10_000)  # each image declares more: refused
    assert len(warnings) == 6 and sum("above the 0.01 Mpx limit" in w for w in warnings) == 5


def _painted(root, w=120, h=80):
    """An effnet-layout set of one image: a white rectangle (class 1) left of a grey one (class 2) on black."""
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        image, mask = np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.uint8)
        image[20:50, 30:60], mask[20:50, 30:60] = 255, 1
        image[30:60, 70:90], mask[30:60, 70:90] = 128, 2
        Image.fromarray(image).save(root / split / "images" / "a.png")
        mask_image(mask).save(root / split / "masks" / "a.png")
    (root / "classes.txt").write_text("background\nwhite\ngrey\n")
    return load_segmentation(root, log=print)


def _band(m: torch.Tensor, px: int = 2) -> torch.Tensor:
    """The pixels within px of m (m grown by px)."""
    return F.max_pool2d(m[None, None].float(), 2 * px + 1, stride=1, padding=px)[0, 0] > 0


def _within(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether every pixel of a lies within 2 px of b."""
    return not bool((a & ~_band(b)).any())


def test_train_augmentation_keeps_image_and_mask_aligned(tmp_path):
    train, _ = _painted(tmp_path)
    ds = SegmentationSamples(train, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 96, train=True, hflip=0.5, seed=3)
    sizes, orders = set(), set()
    for key in range(24):  # 24 epochs of the one image: different flips, scales and crops
        x, y = ds[key]
        assert x.shape == (3, 96, 96) and x.dtype == torch.float32 and x.is_contiguous()
        assert y.shape == (96, 96) and y.dtype == torch.int64 and y.is_contiguous()
        pad = y == IGNORE_INDEX
        assert bool((x[:, pad] == 0).all())  # padding: the mean colour (0 after normalising) and ignored
        white, grey = x[0] > 0.75, (x[0] > 0.25) & (x[0] < 0.75)
        # the labels cover the painted pixels, give or take the 2 px that bilinear resizing blends at each edge
        # (the white rectangle's blended rim reads as grey: grey paint is what lies off that rim)
        assert _within(y == 1, white) and _within(white, y == 1)
        assert _within(y == 2, grey) and _within(grey & ~_band(white), y == 2)
        if (y == 1).any() and (y == 2).any():
            sizes.add(int((y == 1).sum()))
            cols1, cols2 = (y == 1).nonzero()[:, 1].float().mean(), (y == 2).nonzero()[:, 1].float().mean()
            orders.add(bool(cols1 < cols2))
    assert orders == {True, False}  # both flipped and not, the mask flipped with the image
    assert len(sizes) > 3  # the jitter really changed the scale
    again = pickle.loads(pickle.dumps(ds))  # as a DataLoader worker gets it
    assert torch.equal(ds[5][1], again[5][1]) and torch.equal(ds[5][0], again[5][0])  # from (seed, epoch, index)
    assert not torch.equal(ds[5][0], ds[6][0])
    no_flip = SegmentationSamples(train, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 96, train=True, hflip=0.0, seed=3)
    for key in range(8):
        y = no_flip[key][1]
        if (y == 1).any() and (y == 2).any():
            assert (y == 1).nonzero()[:, 1].float().mean() < (y == 2).nonzero()[:, 1].float().mean()


def test_eval_letterbox_pads_the_mask_with_ignore(tmp_path):
    _, val = _painted(tmp_path)
    assert letterbox_size(80, 120, 96) == (64, 96) and letterbox_size(120, 80, 96) == (96, 64)
    ds = SegmentationSamples(val, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 96, train=False)
    x, y = ds[0]
    assert x.shape == (3, 96, 96) and y.shape == (96, 96) and y.dtype == torch.int64
    assert bool((y[64:] == IGNORE_INDEX).all()) and bool((x[:, 64:] == 0).all())
    assert not bool((y[:64] == IGNORE_INDEX).any())
    rows, cols = (y == 1).nonzero().T  # the white rectangle (20:50, 30:60) at 0.8 scale
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (16, 40, 24, 48)
    # white, normalised: (1 - 0.5) / 0.25 inside; the antialiased rim blends a little black in
    assert bool((x[0, 17:39, 25:47] == 2.0).all()) and bool((x[0][y == 1] > 1.0).all())


def test_segment_digits_command(tmp_path):
    out = tmp_path / "sd"
    proc = run_cli("data", "segment-digits", str(out), "--count", "4")
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "4 train images" in lines[0] and "1 val images" in lines[0] and "11 classes" in lines[0]
    train, val = load_segmentation(out, log=print)
    assert len(train.samples) == 4 and len(val.samples) == 1
    bad = run_cli("data", "segment-digits", str(tmp_path / "bad"), "--count", "0", check=False)
    assert bad.returncode == 2 and "--count must be 1 to" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()

"""``effnet data``: write a bundled real dataset to disk."""

from __future__ import annotations

import argparse

from ..files import check_output_path
from .bundled import write_digits, write_photos
from .detect_digits import write_detect_digits
from .segment_digits import write_segment_digits


def cmd_data(args: argparse.Namespace) -> int:
    check_output_path(args.out_dir, "folder", "", "the dataset's folders and files go in it")
    if args.dataset == "detect-digits":
        train = 400 if args.count is None else args.count
        c = write_detect_digits(args.out_dir, train=train, val=max(1, train // 4), seed=args.seed)
        print(f"wrote detect-digits to {args.out_dir} (COCO layout): {c['train_images']} train images / "
              f"{c['train_boxes']} boxes, {c['val_images']} val images / {c['val_boxes']} boxes, 10 classes")
        return 0
    if args.dataset == "segment-digits":
        train = 400 if args.count is None else args.count
        c = write_segment_digits(args.out_dir, train=train, val=max(1, train // 4), seed=args.seed)
        print(f"wrote segment-digits to {args.out_dir} (segmentation layout): {c['train_images']} train images / "
              f"{c['train_digits']} digits, {c['val_images']} val images / {c['val_digits']} digits, 11 classes "
              f"(background + 10 digits), {c['digit_pixel_fraction']:.1%} of pixels digit ink")
        return 0
    if args.dataset == "photos":
        n = write_photos(args.out_dir, count=100 if args.count is None else args.count, seed=args.seed)
        print(f"wrote {n} views of scikit-image's bundled photos to {args.out_dir}")
        return 0
    counts = write_digits(args.out_dir, seed=args.seed)
    print(f"wrote scikit-learn digits to {args.out_dir}: {counts['train']} train, {counts['val']} val, 10 classes")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("data")
    p.add_argument("dataset", choices=["digits", "photos", "detect-digits", "segment-digits"],
                   help="digits: scikit-learn's handwritten digits (ImageFolder); photos: skimage.data views "
                        "(unlabelled); detect-digits: digit scans pasted onto photos (COCO detection layout); "
                        "segment-digits: the same with a class mask per image (segmentation layout)")
    p.add_argument("out_dir")
    p.add_argument("--count", type=int, help="photos: how many views (100); detect-digits, segment-digits: train "
                                               "images (400, val a quarter of that)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_data)

"""``effnet data``: write a bundled real dataset to disk."""

from __future__ import annotations

import argparse

from .bundled import write_digits, write_photos


def cmd_data(args: argparse.Namespace) -> int:
    if args.dataset == "photos":
        n = write_photos(args.out_dir, count=args.count, seed=args.seed)
        print(f"wrote {n} views of scikit-image's bundled photos to {args.out_dir}")
        return 0
    counts = write_digits(args.out_dir, seed=args.seed)
    print(f"wrote scikit-learn digits to {args.out_dir}: {counts['train']} train, {counts['val']} val, 10 classes")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("data", help="write a bundled real dataset as an ImageFolder")
    p.add_argument("dataset", choices=["digits", "photos"],
                   help="digits: scikit-learn's handwritten digits (ImageFolder); photos: skimage.data views (unlabelled)")
    p.add_argument("out_dir")
    p.add_argument("--count", type=int, default=100, help="photos: how many views")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_data)

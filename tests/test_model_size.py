"""A config's size is bounded before anything is built (effnet.models.nets.size): every published model passes the
default limits with room to spare, absurd configs are one line without a byte allocated, the meta-device numbers
are the real network's, and the command line's --max-params / --max-activation-gb / --max-layers set the limits."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import effnet
from effnet.cli import build_parser
from effnet.errors import UsageError
from effnet.models.nets.detector_config import detector_config
from effnet.models.nets.efficientdet import EfficientDet
from effnet.models.nets.efficientnet import EfficientNet
from effnet.models.nets.families import classifier_config
from effnet.models.nets.segmenter import Segmenter
from effnet.models.nets.segmenter_config import segmenter_config, segmenter_names
from effnet.models.nets.size import (DEFAULT_LIMITS, GB, SizeLimits, check_size, current_limits, set_limits,
                                     size_checked)
from effnet.models.zoo.classifier_weights import list_weights

from .conftest import HANG_S, config_file, digit_subset, run_cli

B0 = classifier_config("efficientnet_b0")
D0 = detector_config("efficientdet_d0")
UNET = segmenter_config("unet_efficientnet_b0")
FPN = segmenter_config("fpn_efficientnet_lite0")
MARGIN = 5  # every published model is at least this many times under each default limit

# one config per distinct published weights file (their configs carry the padding, resolution and classes the
# weights were trained with: L2 at 800 px, V2-XL with 21,843 classes, D7x at 1536 px with TF padding)
PUBLISHED = {w.config(): w.name for w in list_weights()}


def _is_well_under(config) -> None:
    size = check_size(config, DEFAULT_LIMITS)
    assert size.params > 0 and size.activation_bytes > size.largest_activation_bytes > 0 and size.layers > 0
    assert size.built_params * MARGIN <= DEFAULT_LIMITS.max_params
    assert size.activation_bytes * MARGIN <= DEFAULT_LIMITS.max_activation_gb * GB
    assert size.layers * MARGIN <= DEFAULT_LIMITS.max_layers
    # limits exactly at the measurement pass (so no "at least" bound ever overstates it) ...
    exact = SizeLimits(max_params=size.built_params, max_activation_gb=size.activation_bytes * (1 + 1e-12) / GB,
                       max_layers=size.layers)
    assert check_size(config, exact) == size
    # ... and one parameter, one layer or a few bytes fewer refuse it, naming the flag
    for limit, value, flag in (("max_params", size.built_params - 1, "--max-params"),
                               ("max_layers", size.layers - 1, "--max-layers"),
                               ("max_activation_gb", size.activation_bytes * (1 - 1e-9) / GB, "--max-activation-gb")):
        with pytest.raises(UsageError, match=rf"^{re.escape(config.name)}\b.*, over the limit of .* \({flag}\)$"):
            check_size(config, dataclasses.replace(exact, **{limit: value}))


@pytest.mark.parametrize("config", list(PUBLISHED), ids=list(PUBLISHED.values()))
def test_every_published_model_is_well_under_the_default_limits(config):
    _is_well_under(config)


@pytest.mark.parametrize("name", segmenter_names())
def test_every_segmenter_is_well_under_the_default_limits(name):
    _is_well_under(segmenter_config(name))


def test_the_largest_published_models_set_the_margins():
    """The defaults' comments quote these: L2 has the most parameters, D7x at 1536 px the most activations and
    layers."""
    l2 = check_size(next(c for c in PUBLISHED if c.name == "efficientnet_l2" and c.resolution == 800))
    d7x = check_size(next(c for c in PUBLISHED if c.name == "efficientdet_d7x"))
    assert 480e6 < l2.params < 481e6 and DEFAULT_LIMITS.max_params / l2.params > 8
    assert 26e9 < d7x.activation_bytes < 26.5e9 and d7x.resolution == 1536
    assert DEFAULT_LIMITS.max_activation_gb * GB / d7x.activation_bytes > 38
    assert d7x.layers == 198 and DEFAULT_LIMITS.max_layers / d7x.layers > 10


def _real_outputs(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """Parameters and float32 bytes of every module's distinct output tensors, from a real forward on the CPU."""
    seen: dict[int, torch.Tensor] = {}

    def record(module, inputs, output):
        for t in output if isinstance(output, (list, tuple)) else (output,):
            if isinstance(t, torch.Tensor):
                seen[id(t)] = t

    hooks = [m.register_forward_hook(record) for m in model.modules()]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return sum(p.numel() for p in model.parameters()), sum(t.numel() * 4 for t in seen.values())


@pytest.mark.parametrize("network, config, side", [
    (EfficientNet, B0, 64), (EfficientNet, classifier_config("tf_efficientnetv2_b0"), 72), (EfficientDet, D0, 128),
    (Segmenter, UNET, 64), (Segmenter, FPN, 96)], ids=["b0", "tf_v2_b0", "d0", "unet_b0", "fpn_lite0"])
def test_the_meta_numbers_are_the_real_networks(network, config, side):
    """Built for real at a tiny side and run on a real image-sized tensor: the same parameters and activation
    bytes the meta device gave, before anything was allocated."""
    size = check_size(config, resolution=side)
    params, activation_bytes = _real_outputs(network(config), torch.rand(1, 3, side, side))
    assert (size.params, size.activation_bytes, size.resolution) == (params, activation_bytes, side)


def test_b0_has_its_published_parameter_count():
    assert check_size(B0).params == 5_288_548  # timm's efficientnet_b0 and torchvision's: 5.3 M


def test_a_detector_counts_the_backbone_head_it_builds_and_drops():
    size = check_size(D0.replace(backbone=D0.backbone.replace(head_channels=2560)))
    plain = check_size(D0)
    assert size.params == plain.params  # the model keeps no head ...
    assert size.built_params - plain.built_params == 320 * (2560 - 1280) + 2 * (2560 - 1280)  # ... but builds one


# ------------------------------------------------------------------------------------------------ refusals

ABSURD = [
    (B0.replace(width_mult=1e9),
     "efficientnet_b0 (width_mult 1e+09): at least 3.77e+24 parameters, over the limit of 4e+09 (--max-params)"),
    (B0.replace(depth_mult=1e9),
     "efficientnet_b0 (depth_mult 1e+09): 1.6e+10 layers, over the limit of 2,000 (--max-layers)"),
    # 320 x 1e9 head conv + 1e9 x 1000 classifier
    (B0.replace(head_channels=10**9),
     "efficientnet_b0 (head_channels 1e+09): at least 1.32e+12 parameters, over the limit of 4e+09 (--max-params)"),
    (B0.replace(resolution=10**9),
     "efficientnet_b0 (resolution 1e+09): at least 5.37e+11 GB of activations at 1e+09 px, batch 1, over the limit "
     "of 1,000 GB (--max-activation-gb)"),
    (B0.replace(num_classes=10**12),
     "efficientnet_b0 (num_classes 1e+12): at least 1.28e+15 parameters, over the limit of 4e+09 (--max-params)"),
    (B0.replace(width_mult=1e300),
     "efficientnet_b0 (width_mult 1e+300): at least 3.77e+606 parameters, over the limit of 4e+09 (--max-params)"),
    (B0.replace(name="my_net", width_mult=1e9),
     "my_net: at least 3.77e+24 parameters, over the limit of 4e+09 (--max-params)"),
    (B0.replace(blocks=(dataclasses.replace(B0.blocks[0], repeats=10**7),) + B0.blocks[1:]),
     "efficientnet_b0 (blocks[0].repeats 1e+07): 1e+07 layers, over the limit of 2,000 (--max-layers)"),
    (D0.replace(fpn_channels=10**9),
     "efficientdet_d0 (fpn_channels 1e+09): at least 3e+19 parameters built, over the limit of 4e+09 (--max-params)"),
    (D0.replace(fpn_repeats=10**9),
     "efficientdet_d0 (fpn_repeats 1e+09): 8e+09 layers, over the limit of 2,000 (--max-layers)"),
    (D0.replace(max_level=10**9),
     "efficientdet_d0 (max_level 1e+09): 1.3e+10 layers, over the limit of 2,000 (--max-layers)"),
    (D0.replace(backbone=D0.backbone.replace(head_channels=10**9)),
     "efficientdet_d0 (backbone.head_channels 1e+09): at least 3.2e+11 parameters built, over the limit of 4e+09 "
     "(--max-params)"),
    (UNET.replace(decoder_channels=(10**9, 128, 64, 32, 16)),
     "unet_efficientnet_b0 (decoder_channels (1e+09, 128, 64, 32, 16)): at least 9e+18 parameters built, over the "
     "limit of 4e+09 (--max-params)"),
    (FPN.replace(pyramid_channels=10**9),
     "fpn_efficientnet_lite0 (pyramid_channels 1e+09): at least 5.1e+12 parameters built, over the limit of 4e+09 "
     "(--max-params)"),
    (FPN.replace(upsampling=10**6),
     "fpn_efficientnet_lite0 (upsampling 1e+06): at least 2.63e+08 GB of activations at 224 px, batch 1, over the "
     "limit of 1,000 GB (--max-activation-gb)"),
]


@pytest.mark.parametrize("config, line", ABSURD, ids=[line.split(":")[0] for _, line in ABSURD])
def test_an_absurd_config_is_one_line_naming_number_limit_and_flag(config, line):
    with pytest.raises(UsageError) as caught:
        check_size(config, DEFAULT_LIMITS)
    assert str(caught.value) == line


NOT_A_NETWORK = [
    (B0.replace(width_mult=float("inf")), "efficientnet_b0: width_mult must be a finite number, got inf"),
    (B0.replace(depth_mult=float("nan")), "efficientnet_b0: depth_mult must be a finite number, got nan"),
    (B0.replace(width_mult="wide"), "efficientnet_b0: width_mult must be a finite number, got 'wide'"),
    (B0.replace(resolution=-3), "efficientnet_b0: resolution must be a number from 1 to 4.61e+18, got -3"),
    (B0.replace(head_channels=10**400), "efficientnet_b0: head_channels must be a number from 1 to 4.61e+18, "
                                        "got 1e+400"),
    (B0.replace(blocks=(dataclasses.replace(B0.blocks[0], stride=0),) + B0.blocks[1:]),
     "efficientnet_b0: blocks[0].stride must be a number from 1 to 4.61e+18, got 0"),
    # what the real build would raise as a traceback, as one line
    (FPN.replace(segmentation_channels=100),
     "fpn_efficientnet_lite0 (segmentation_channels 100): not a network effnet can build (ValueError: num_channels "
     "(100) must be divisible by num_groups (32))"),
    (UNET.replace(taps=(2, 4, 10, 99)),
     "unet_efficientnet_b0 (taps (2, 4, 10, 99)): not a network effnet can build (IndexError: list index out of "
     "range)"),
]


@pytest.mark.parametrize("config, line", NOT_A_NETWORK,
                         ids=[line.split(":")[1].split()[0] for _, line in NOT_A_NETWORK])
def test_a_config_that_makes_no_network_is_one_line(config, line):
    with pytest.raises(UsageError) as caught:
        check_size(config)
    assert str(caught.value) == line


@pytest.mark.parametrize("limits, line", [
    (dict(max_params=0), "--max-params must be above 0 and at most 1e+12, got 0"),
    (dict(max_params=1e20), "--max-params must be above 0 and at most 1e+12, got 1e+20"),
    (dict(max_activation_gb=float("nan")), "--max-activation-gb must be above 0 and at most 1e+06, got nan"),
    (dict(max_layers=True), "--max-layers must be above 0 and at most 100,000, got True"),
])
def test_a_limit_outside_its_range_is_one_line(limits, line):
    with pytest.raises(UsageError) as caught:
        SizeLimits(**limits)
    assert str(caught.value) == line


def test_the_process_limits_are_what_check_size_applies_by_default():
    assert current_limits() == DEFAULT_LIMITS
    set_limits(SizeLimits(max_params=1e6))
    try:
        with pytest.raises(UsageError, match=r"^efficientnet_b0: .* parameters, over the limit of 1e\+06 "
                                             r"\(--max-params\)$"):
            check_size(B0)
        assert check_size(B0, DEFAULT_LIMITS).params == 5_288_548  # given limits win
    finally:
        set_limits(DEFAULT_LIMITS)


# the refusals, in a process of their own: its peak memory (ru_maxrss) after torch and the networks are loaded and
# one model of each kind measured, then after every refusal -- among them models a real build would need 8.5 GB
# (B0 with a 1.6 M-channel head) and 1.9 GB (L2) for -- and how long each took
_REFUSALS = """
import json, resource, time
from effnet.errors import UsageError
from effnet.models.nets.size import SizeLimits, check_size
from tests.test_model_size import ABSURD, B0, D0, FPN, UNET, classifier_config
for warm in (B0, D0, UNET, FPN):
    check_size(warm)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cases = [(c, None) for c, _ in ABSURD] + [(B0.replace(head_channels=1_600_000), SizeLimits(max_params=1e8)),
                                          (classifier_config("efficientnet_l2"), SizeLimits(max_params=480e6))]
lines, seconds = [], []
for config, limits in cases:
    start = time.perf_counter()
    try:
        check_size(config, limits)
        lines.append(None)
    except UsageError as exc:
        lines.append(str(exc))
    seconds.append(time.perf_counter() - start)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps(dict(lines=lines, grown_kib=grown, seconds=seconds)))
"""


def test_refusals_allocate_nothing():
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", _REFUSALS], capture_output=True, text=True, timeout=HANG_S, cwd=root)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert found["lines"][:len(ABSURD)] == [line for _, line in ABSURD]
    assert re.match(r"^efficientnet_b0 \(head_channels 1.6e\+06\): at least 2.\d+e\+09 parameters", found["lines"][-2])
    assert re.match(r"^efficientnet_l2: .*4.8\d*e\+08 parameters, over the limit of 4.8e\+08", found["lines"][-1])
    assert found["grown_kib"] < 64 * 1024, found  # a real build of either would have grown it by gigabytes


def test_the_limits_load_no_torch():
    """`effnet --help` and `effnet list` read the limits' flags: importing them loads neither torch nor a network."""
    networks = ("torch", "effnet.models.nets.efficientnet", "effnet.models.nets.efficientdet",
                "effnet.models.nets.segmenter")
    code = f"import sys, effnet.cli, effnet.models.nets.size; print(sorted(set(sys.modules) & set({networks!r})))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


# ----------------------------------------------------------------------------------------- the command line

def _leaf_parsers(parser: argparse.ArgumentParser, path: str = "effnet"):
    subs = [a.choices for a in parser._actions if isinstance(getattr(a, "choices", None), dict)]  # name -> parser
    if not subs:
        yield path, parser
    for choices in subs:
        for name, child in choices.items():
            yield from _leaf_parsers(child, f"{path} {name}")


def test_every_command_takes_the_limits_with_their_real_defaults():
    leaves = list(_leaf_parsers(build_parser()))
    assert {"effnet info", "effnet train", "effnet predict", "effnet detect train", "effnet segment predict",
            "effnet serve"} <= {path for path, _ in leaves}
    for path, parser in leaves:
        for f in dataclasses.fields(SizeLimits):
            assert parser.get_default(f.name) == getattr(DEFAULT_LIMITS, f.name), (path, f.name)
            flag = "--" + f.name.replace("_", "-")
            assert flag in parser._option_string_actions, (path, flag)


def test_a_limit_flag_out_of_range_is_one_line():
    proc = run_cli("info", "efficientnet_b0", "--max-params", "0", check=False)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == "effnet: error: --max-params must be above 0 and at most 1e+12, got 0\n"


def test_info_on_a_config_with_width_mult_1e9_is_one_line(tmp_path):
    """Was "RuntimeError: Storage size calculation overflowed" (needs check_size at the registry's build points)."""
    config = config_file(tmp_path, "efficientnet_b0", width_mult=1e9)
    proc = run_cli("info", config, check=False)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == ("effnet: error: efficientnet_b0 (width_mult 1e+09): at least 3.77e+24 parameters, over the "
                           "limit of 4e+09 (--max-params)\n")


def test_predict_with_an_absurd_config_writes_nothing(tmp_path, photos):
    config = config_file(tmp_path, "efficientnet_b0", width_mult=1e9)
    out = tmp_path / "out.jsonl"
    proc = run_cli("predict", "--model", config, photos["chelsea"], "--output", out, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("effnet: error: efficientnet_b0 (width_mult 1e+09): at least 3.77e+24 parameters")
    assert not out.exists()


def test_max_params_raises_the_limit(tmp_path):
    """A 26-billion-parameter head is refused by default and measured (on the meta device) when the flag allows it."""
    config = config_file(tmp_path, "efficientnet_b0", head_channels=20_000_000)
    refused = run_cli("info", config, check=False)
    assert refused.returncode == 2
    assert re.fullmatch(r"effnet: error: efficientnet_b0 \(head_channels 2e\+07\): at least 2.64e\+10 parameters, "
                        r"over the limit of 4e\+09 \(--max-params\)\n", refused.stderr)
    allowed = run_cli("info", config, "--max-params", "1e11")
    assert re.search(r"params 26,4\d\d,\d{3},\d{3} ", allowed.stdout)


def test_train_with_a_1e9_channel_head_is_one_line_and_writes_nothing(tmp_path, digits):
    """Was "can't allocate 1280000000000 bytes" (needs check_size at create_model)."""
    data = digit_subset(digits, tmp_path / "data", 4, 2)
    config = config_file(tmp_path, "efficientnet_b0", head_channels=10**9)
    run = tmp_path / "run"
    proc = run_cli("train", data, "--model", config, "--epochs", "1", "--batch-size", "4", "--out", run, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == ("effnet: error: efficientnet_b0 (head_channels 1e+09): at least 1.32e+12 parameters, over "
                           "the limit of 4e+09 (--max-params)\n")
    assert not run.exists()


def test_without_measuring_only_the_bounds_are_checked():
    """For a caller that builds on the meta device itself: counts and lower bounds refuse what would overflow or
    loop, and nothing is built."""
    assert check_size(B0, measure=False) is None
    for config, line in ABSURD:
        with pytest.raises(UsageError) as caught:
            check_size(config, measure=False)
        assert str(caught.value) == line


# ------------------------------------------------------------------------------------------ the build points

DATA = Path(__file__).parent / "data"
TINY = DATA / "tiny_saved_by_v0.1.safetensors"  # a real effnet file: a classifier named tiny-v0.1
TINY_DETECTOR = DATA / "tiny_detector_saved_by_d77e2bf.safetensors"
OVER_PARAMS = r", over the limit of 4e\+09 \(--max-params\)$"


@pytest.mark.parametrize("kwargs, line", [
    (dict(num_classes=10**12), "efficientnet_lite0 (num_classes 1e+12): at least 1.28e+15 parameters"),
    (dict(in_chans=10**9), "efficientnet_lite0 (in_chans 1e+09): at least 2.88e+11 parameters"),
], ids=["num_classes", "in_chans"])
def test_create_model_checks_the_head_before_the_published_weights_adapt(kwargs, line):
    """Lite0's published weights come from an installed package: without the check, adapting them would build the
    asked-for head (5 PB) or stem."""
    with pytest.raises(UsageError) as caught:
        effnet.create_model("efficientnet_lite0", pretrained=True, **kwargs)
    assert str(caught.value) == line + ", over the limit of 4e+09 (--max-params)"


@pytest.mark.parametrize("name, kwargs, line", [
    ("efficientdet_d0", dict(pretrained=True, num_classes=10**12),  # refused before any download
     "efficientdet_d0 (num_classes 1e+12): at least 5.76e+14 parameters built"),
    ("efficientdet_d0", dict(num_classes=10**12), "efficientdet_d0 (num_classes 1e+12): at least 5.76e+14 "
                                                  "parameters built"),
    ("unet_efficientnet_b0", dict(num_classes=10**12),
     "unet_efficientnet_b0 (num_classes 1e+12): at least 1.44e+14 parameters built"),
], ids=["detector_pretrained", "detector", "segmenter"])
def test_create_model_checks_detectors_and_segmenters(name, kwargs, line):
    with pytest.raises(UsageError) as caught:
        effnet.create_model(name, **kwargs)
    assert str(caught.value) == line + ", over the limit of 4e+09 (--max-params)"


@pytest.mark.parametrize("path", [TINY, TINY_DETECTOR], ids=["classifier", "detector"])
def test_a_saved_models_new_head_is_checked_before_it_is_built(path):
    with pytest.raises(UsageError, match=r"^(tiny-v0.1|efficientdet_lite0 \(.*num_classes 1e\+12.*\)): at least "
                                         r"[\d.]+e\+1\d parameters( built)?" + OVER_PARAMS):
        effnet.create_model(path, num_classes=10**12)


def _with_config(source: Path, target: Path, **changes) -> Path:
    """``source`` (an effnet file) with ``changes`` written into the config its header carries."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from effnet.models.zoo.model_files import CONFIG_KEY

    with safe_open(str(source), "pt") as f:
        meta = f.metadata()
    save_file(load_file(source), target, metadata={**meta, CONFIG_KEY: json.dumps({**json.loads(meta[CONFIG_KEY]),
                                                                                    **changes})})
    return target


def test_a_file_whose_header_asks_for_a_huge_network_is_one_line(tmp_path, photos):
    bad = _with_config(TINY, tmp_path / "bad.safetensors", width_mult=1e9)
    with pytest.raises(UsageError, match=r"^tiny-v0.1: at least [\d.]+e\+2\d parameters" + OVER_PARAMS):
        effnet.load(bad)
    out = tmp_path / "out.jsonl"
    proc = run_cli("predict", "--model", bad, photos["chelsea"], "--output", out, check=False)
    assert (proc.returncode, proc.stdout, out.exists()) == (2, "", False)
    assert re.fullmatch(r"effnet: error: tiny-v0.1: at least [\d.]+e\+2\d parameters, over the limit of 4e\+09 "
                        r"\(--max-params\)\n", proc.stderr)


def test_a_hub_folder_whose_config_asks_for_a_huge_network_is_one_line(tmp_path):
    folder = tmp_path / "hub"
    effnet.save_pretrained(effnet.create_model("efficientnet_b0", num_classes=3), folder)
    config = json.loads((folder / "config.json").read_text())
    config["effnet"]["head_channels"] = 10**9
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError) as caught:
        effnet.create_model(f"local-dir:{folder}")
    assert str(caught.value) == ("efficientnet_b0 (head_channels 1e+09, num_classes 3): at least 3.23e+11 parameters, "
                                 "over the limit of 4e+09 (--max-params)")


def test_info_at_an_absurd_resolution_is_one_line():
    """Was "RuntimeError: Storage size calculation overflowed"."""
    proc = run_cli("info", "efficientnet_b0", "--resolution", "1000000000", check=False)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == ("effnet: error: efficientnet_b0: at least 5.37e+11 GB of activations at 1e+09 px, batch 1, "
                           "over the limit of 1,000 GB (--max-activation-gb)\n")


def test_a_build_on_the_meta_device_is_bounded_but_not_measured():
    """`effnet info` and `family` count shapes on the meta device, where a build allocates nothing: the counts and
    bounds still refuse what would overflow, and the measurement (a second meta build) is skipped -- so a config
    only the measurement refuses passes there, and is refused for a real build."""
    unbuildable = FPN.replace(segmentation_channels=100)  # GroupNorm(32) of 100 channels: only a build finds it
    with torch.device("meta"):
        assert size_checked(unbuildable) is unbuildable
        with pytest.raises(UsageError, match=r"^efficientnet_b0 \(width_mult 1e\+09\): at least"):
            size_checked(B0.replace(width_mult=1e9))
    with pytest.raises(UsageError, match=r"not a network effnet can build \(ValueError: num_channels \(100\)"):
        size_checked(unbuildable)

import dataclasses
import warnings

import pytest

import effnet
from effnet.models.nets.config import B0_STAGES, VARIANTS, BlockArgs, ModelConfig, round_filters, round_repeats, scale
from effnet.models.paper.accounting import profile


def test_round_filters_ten_percent_rule():
    # nearest multiple of 8 ...
    assert round_filters(32, 1.1) == 32 and round_filters(40, 1.1) == 48 and round_filters(1280, 1.1) == 1408
    # ... unless that is more than 10% below the unrounded value: 16 * 1.2 = 19.2 -> 16 is < 17.28 -> 24
    assert round_filters(16, 1.2) == 24


def test_ten_percent_rule_changes_exactly_one_b0_b7_width():
    """Rounding without the 10% rule differs in exactly one place across B0-B7: B3's first stage."""
    def plain(c, w):
        return max(8, int(c * w + 4) // 8 * 8)

    changed = []
    for name in (f"efficientnet_b{i}" for i in range(8)):
        w = VARIANTS[name][0]
        for label, c in [("stem", 32), ("head", 1280)] + [(f"stage{i + 2}", b.out_channels) for i, b in enumerate(B0_STAGES)]:
            if round_filters(c, w) != plain(c, w):
                changed.append((name, label, round_filters(c, w), plain(c, w)))
    assert changed == [("efficientnet_b3", "stage2", 24, 16)]


def test_round_repeats_ceil():
    assert round_repeats(1, 1.1) == 2 and round_repeats(4, 1.8) == 8 and round_repeats(3, 1.0) == 3


def test_scale_b0_is_the_paper_table():
    arch = scale(effnet.ModelConfig())
    rows = [(s.expand_ratio, s.kernel_size, s.stride, s.out_channels, s.repeats) for s in arch.stages]
    assert rows == [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                    (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
    assert (arch.stem_channels, arch.head_channels) == (32, 1280)


def test_lite_keeps_stem_head_and_first_last_repeats():
    arch = scale(effnet.models.zoo.registry.resolve_config("efficientnet_lite4"))
    assert arch.stem_channels == 32 and arch.head_channels == 1280
    assert arch.stages[0].repeats == 1 and arch.stages[-1].repeats == 1
    assert arch.stages[1].repeats == 4  # ceil(2 * 1.8)


def test_overrides_are_checked():
    cfg = ModelConfig()
    with pytest.raises(TypeError):
        cfg.replace(widht_mult=2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.width_mult = 2.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        ModelConfig.from_dict({"name": "x", "bogus": 1})


def test_config_json_round_trip_and_block_strings():
    cfg = effnet.compound(1.5)
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    assert [b.to_string() for b in B0_STAGES][1] == "ir_r2_k3_s2_e6_c24_se0.25"
    assert all(BlockArgs.from_string(b.to_string()) == b for b in B0_STAGES)
    with pytest.raises(ValueError):
        BlockArgs.from_string("er_r1_k3")


def test_compound_rule_values():
    cfg = effnet.compound(1)
    assert cfg.depth_mult == pytest.approx(1.2) and cfg.width_mult == pytest.approx(1.1)
    assert cfg.resolution == 256  # 224 * 1.15 = 257.6 -> nearest multiple of 8
    assert effnet.compound(0).resolution == 224


def test_compound_errors_and_warnings():
    with pytest.raises(ValueError):
        effnet.compound(1, alpha=0)
    with pytest.raises(ValueError):
        effnet.compound(1, beta=-1.1)
    with pytest.warns(UserWarning, match="far from 2"):
        effnet.compound(1, alpha=2.0, beta=1.2, gamma=1.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        effnet.compound(1)  # 1.2 * 1.1^2 * 1.15^2 = 1.92: no warning


def test_compound_scaling_doubles_macs_per_phi():
    """Paper eq. 3: FLOPs grow ~ (alpha beta^2 gamma^2)^phi ~ 2^phi; params and MACs grow monotonically.

    Measured on the built models: each unit of phi multiplies MACs by 2 within 15%, and so does the
    geometric-mean growth over phi units. (ceil() on small repeat counts adds up to ~17% in total at phi=2.)
    """
    macs = [profile(effnet.compound(phi)).macs for phi in (0, 1, 2, 3)]
    params = [profile(effnet.compound(phi)).params for phi in (0, 1, 2, 3)]
    assert macs == sorted(macs) and params == sorted(params) and len(set(macs)) == 4
    for phi in (1, 2, 3):
        assert macs[phi] / macs[phi - 1] == pytest.approx(2.0, rel=0.15)
        assert (macs[phi] / macs[0]) ** (1 / phi) == pytest.approx(2.0, rel=0.15)
    # fractional phi works too and sits in between
    assert macs[0] < profile(effnet.compound(0.5)).macs < macs[1]

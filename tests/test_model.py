import pytest
import torch

import effnet
from effnet.models.nets.blocks import MBConv
from effnet.models.nets.layers import DropPath, SamePad2d
from effnet.models.paper.accounting import PAPER_TABLE, profile

PARAMS = {
    "efficientnet_b0": 5_288_548, "efficientnet_b1": 7_794_184, "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232, "efficientnet_b4": 19_341_616, "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704, "efficientnet_b7": 66_347_960, "efficientnet_lite0": 4_652_008,
    "efficientnet_lite1": 5_416_680, "efficientnet_lite2": 6_092_072, "efficientnet_lite3": 8_197_096,
    "efficientnet_lite4": 13_006_568, "efficientnet_l2": 480_309_308,
}


def test_list_models():
    names = effnet.list_models()
    for i in range(8):
        assert f"efficientnet_b{i}" in names
    for i in range(5):
        assert f"efficientnet_lite{i}" in names
    assert "efficientnet_l2" in names


@pytest.mark.parametrize("name", list(PARAMS))
def test_exact_parameter_counts(name):
    model = effnet.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


@pytest.mark.parametrize("name", list(PAPER_TABLE))
def test_macs_within_5_percent_of_paper(name):
    p = profile(name)
    paper_macs = PAPER_TABLE[name][1] * 1e9
    assert abs(p.macs - paper_macs) / paper_macs < 0.05, (p.macs, paper_macs)
    assert p.params == PARAMS[name]
    assert sum(r.params for r in p.rows) == p.params and sum(r.macs for r in p.rows) == p.macs


def test_b0_profile_rows_follow_table_1():
    p = profile("efficientnet_b0")
    assert [r.resolution[0] for r in p.rows] == [224, 112, 112, 56, 28, 14, 14, 7, 7]
    assert [r.channels for r in p.rows] == [32, 16, 24, 40, 80, 112, 192, 320, 1280]
    assert [r.layers for r in p.rows] == [1, 1, 2, 2, 3, 3, 4, 1, 1]
    assert p.rows[3].operator == "MBConv6, k5x5"


def test_forward_shapes_and_new_head():
    model = effnet.create_model("efficientnet_b0", num_classes=7, in_chans=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 96, 96)).shape == (2, 7)
    model.freeze_backbone()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["classifier.weight", "classifier.bias"]


def test_create_model_refuses_an_argument_the_family_cannot_honour():
    """A detector has no dropout, stochastic depth, feature-only form or other input channels; a classifier no
    pretrained backbone: each is refused with one line naming it, not dropped. The paper's shorthand and
    ``in_chans`` alone (without ``num_classes``) are honoured."""
    for argument, value in (("dropout", 0.1), ("drop_path_rate", 0.1), ("features_only", True), ("in_chans", 1)):
        with pytest.raises(effnet.errors.UsageError, match=f"efficientdet_d0 is a detector .*takes no '{argument}'"):
            effnet.create_model("efficientdet_d0", **{argument: value})
    with pytest.raises(effnet.errors.UsageError, match="is a classifier, which takes no 'pretrained_backbone'"):
        effnet.create_model("efficientnet_b0", pretrained_backbone=True)
    gray = effnet.create_model("b0", in_chans=1)
    assert gray.config.name == "efficientnet_b0" and gray.stem.conv.in_channels == 1


def test_features_only_strides_and_channels():
    feats = effnet.create_model("efficientnet_b0", features_only=True).eval()
    assert [f["reduction"] for f in feats.feature_info] == [2, 4, 8, 16, 32]
    assert [f["num_chs"] for f in feats.feature_info] == [16, 24, 40, 112, 320]
    with torch.no_grad():
        outs = feats(torch.randn(1, 3, 128, 160))
    assert [tuple(o.shape[1:]) for o in outs] == [(16, 64, 80), (24, 32, 40), (40, 16, 20), (112, 8, 10), (320, 4, 5)]


def test_features_only_matches_full_model_trunk():
    torch.manual_seed(1)
    full = effnet.create_model("efficientnet_lite0").eval()
    feats = effnet.create_model("efficientnet_lite0", features_only=True).eval()
    feats.load_state_dict({k: v for k, v in full.state_dict().items() if k.startswith(("stem", "blocks"))})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(feats(x)[-1], full.blocks(full.stem(x)))


def test_residual_only_with_stride_1_and_equal_channels():
    assert MBConv(16, 16, 3, 1, 6, 0.25).has_residual
    assert not MBConv(16, 24, 3, 1, 6, 0.25).has_residual
    assert not MBConv(16, 16, 3, 2, 6, 0.25).has_residual
    block = MBConv(32, 16, 3, 1, 1, 0.25)  # MBConv1: no expansion conv; SE reduces from input 32 * 0.25
    assert isinstance(block.expand, torch.nn.Identity)
    assert block.se.reduce.out_channels == 8


def test_drop_path_grows_linearly_to_rate():
    model = effnet.create_model("efficientnet_b0", drop_path_rate=0.2)
    blocks = [b for stage in model.blocks for b in stage]
    for idx, block in enumerate(blocks):  # rate * block_index / total_blocks, only on residual blocks
        if block.has_residual:
            assert block.drop_path.rate == pytest.approx(0.2 * idx / len(blocks))
        else:
            assert not isinstance(block.drop_path, DropPath)
    assert len(blocks) == 16


def test_drop_path_training_statistics():
    torch.manual_seed(0)
    dp = DropPath(0.25).train()
    y = dp(torch.ones(20000, 1, 1, 1))
    kept = (y > 0).float().mean().item()
    assert kept == pytest.approx(0.75, abs=0.02)
    assert y.mean().item() == pytest.approx(1.0, abs=0.03)  # survivors rescaled by 1/(1-rate)
    assert torch.equal(dp.eval()(torch.ones(4, 1, 1, 1)), torch.ones(4, 1, 1, 1))


@pytest.mark.parametrize("size", [224, 225, 97])
def test_tf_same_padding_output_and_asymmetry(size):
    # TF SAME: output = ceil(size / stride); any extra pixel goes bottom/right
    pad = SamePad2d(3, 2)
    x = torch.ones(1, 1, size, size)
    y = pad(x)
    out = -(-size // 2)
    total = max((out - 1) * 2 + 3 - size, 0)
    assert y.shape[-1] == size + total
    if total == 1:
        assert y[0, 0, 0, 0] == 1 and y[0, 0, -1, -1] == 0
    model = effnet.create_model("efficientnet_b0", tf_padding=True).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, size, size)).shape[-1] == -(-size // 32)


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_conv_bf16_training_gradients_are_float32_exact(stride):
    """Under bf16 autocast the depthwise conv's forward is bf16 and its gradients are float32 results computed
    from the same bf16 tensors; without autocast or gradients it is exactly nn.Conv2d."""
    from effnet.models.nets.layers import DepthwiseConv2d

    torch.manual_seed(0)
    conv = DepthwiseConv2d(24, 24, 5, stride, 2, groups=24, bias=False)
    assert set(conv.state_dict()) == {"weight"}
    x = torch.randn(2, 24, 17, 17).contiguous(memory_format=torch.channels_last).requires_grad_()
    with torch.no_grad():
        assert torch.equal(conv(x), torch.nn.functional.conv2d(x, conv.weight, None, stride, 2, 1, 24))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    assert y.dtype == torch.bfloat16
    g = torch.randn_like(y)
    y.backward(g)
    xb, wb = x.detach().bfloat16().float().requires_grad_(), conv.weight.detach().bfloat16().float().requires_grad_()
    torch.nn.functional.conv2d(xb, wb, None, stride, 2, 1, 24).backward(g.float())
    assert conv.weight.grad.dtype == torch.float32
    assert torch.allclose(conv.weight.grad, wb.grad, rtol=1e-5, atol=1e-4)
    assert torch.allclose(x.grad, xb.grad, rtol=1e-2, atol=1e-2)  # the input gradient is rounded to bf16


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_se_pool_gradient_is_torchs_broadcast_in_the_inputs_layout(dtype, monkeypatch):
    """global_pool (the SE's squeeze in training): torch's adaptive_avg_pool2d values (bf16: avg_pool2d's, which may
    sum in another order: within a bf16 rounding) and gradients, but the gradient comes back as a broadcast view, so
    the SE input's two gradients (gate and pool) add without a full-size pool gradient written in another layout;
    the SE's input gradient equals plain autograd's (float32: bit for bit)."""
    import torch.nn.functional as F

    from effnet.models.nets.layers import SqueezeExcite
    from effnet.models.nets.lean import global_pool

    torch.manual_seed(0)
    x = torch.randn(3, 24, 9, 7).to(dtype).contiguous(memory_format=torch.channels_last)
    tolerance = dict(rtol=0, atol=0) if dtype == torch.float32 else dict(rtol=2**-7, atol=1e-3)
    grads = []
    for pool in (global_pool, lambda t: F.adaptive_avg_pool2d(t, 1)):
        xi = x.clone().requires_grad_()
        y = pool(xi)
        torch.testing.assert_close(y, F.adaptive_avg_pool2d(x, 1), **tolerance)
        (g,) = torch.autograd.grad(y, xi, torch.randn(3, 24, 1, 1, generator=torch.Generator().manual_seed(1))
                                   .to(dtype))
        grads.append(g)
    assert torch.equal(grads[0], grads[1]) and grads[0].stride()[2:] == (0, 0)  # a view, nothing written
    from effnet.models.nets import layers

    se = SqueezeExcite(24, 6).to(dtype)
    outs = []
    for plain in (False, True):
        if plain:  # torch's own pool: its gradient is written in NCHW order
            monkeypatch.setattr(layers, "global_pool", lambda t: F.adaptive_avg_pool2d(t, 1))
        xi = x.clone().requires_grad_()
        se(xi).backward(torch.ones_like(x))
        outs.append(xi.grad)
    bf16_chain = dict(rtol=1e-2, atol=1e-2)  # a pooled value one rounding off moves the gate a little
    torch.testing.assert_close(outs[0], outs[1], **(tolerance if dtype == torch.float32 else bf16_chain))


def test_lean_bf16_training_stores_less_and_keeps_the_gradients(monkeypatch):
    """The lean recipe of benchmarks/bench_train.py (channels_last, bf16 autocast, memory-efficient layers with
    every expansion fused into its depthwise conv, checkpointing of the first 3 stages' blocks): gradients agree
    with plain bf16 training to bf16 accuracy, and autograd keeps under half of the bytes."""
    from effnet.models.nets import lean as lean_kernels

    monkeypatch.setattr(lean_kernels, "LEAN_FUSE_MIN_BYTES", 0)
    torch.manual_seed(0)
    models = [effnet.create_model("efficientnet_b0", num_classes=10, drop_path_rate=0.0, dropout=0.0).train()
              for _ in range(2)]
    plain, lean = (m.to(memory_format=torch.channels_last) for m in models)
    lean.load_state_dict(plain.state_dict())
    lean.set_memory_efficient().set_grad_checkpointing(True, stages=3)
    x = torch.randn(4, 3, 96, 96).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (4,))
    saved = {}
    for key, model in (("plain", plain), ("lean", lean)):
        stored = {}

        def pack(t, stored=stored):
            stored[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        saved[key] = sum(stored.values())
    assert saved["lean"] < 0.5 * saved["plain"], saved  # measured 0.40
    for (n, p), q in zip(plain.named_parameters(), lean.parameters()):
        # bf16 rounding differs between the paths: compare directions; a projection's BatchNorm bias has a true
        # gradient of ~0 (the next training-mode BatchNorm removes constant shifts): only noise to compare
        if p.grad.norm() > 1e-3 and not n.endswith("project.bn.bias"):
            # the worst tensor is an SE reduce bias: 0.988 on 2 threads, 0.978 on 1 (bf16 sums split otherwise)
            assert torch.nn.functional.cosine_similarity(p.grad.flatten(), q.grad.flatten(), dim=0) > 0.97, n


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_lite0"])
def test_fused_batchnorm_activation_matches_plain_training(name, monkeypatch):
    """set_memory_efficient: BatchNorm + SiLU/ReLU6 store only the conv output, and every expansion's output goes
    into its depthwise conv without being stored (the size threshold set to 0: all are fused here); gradients,
    running statistics and batch counters equal the plain modules' (float32)."""
    from effnet.models.nets import lean as lean_kernels

    monkeypatch.setattr(lean_kernels, "LEAN_FUSE_MIN_BYTES", 0)
    torch.manual_seed(0)
    plain = effnet.create_model(name, num_classes=10, drop_path_rate=0.0, dropout=0.0).train()
    lean = effnet.create_model(name, num_classes=10, drop_path_rate=0.0, dropout=0.0).train()
    lean.load_state_dict(plain.state_dict())
    lean.set_memory_efficient(True)
    x, y = torch.randn(4, 3, 64, 64), torch.randint(0, 10, (4,))
    for model in (plain, lean):
        for _ in range(2):
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
    for (n, p), q in zip(plain.named_parameters(), lean.parameters()):
        # 5e-5: a projection's BatchNorm bias feeds only the next block's training-mode BatchNorm (plus the
        # residual), so its true gradient is ~0 and both paths return rounding noise of ~1e-5
        assert (p.grad - q.grad).norm() <= 1e-4 * p.grad.norm() + 5e-5, n
    for (n, a), b in zip(plain.named_buffers(), lean.buffers()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6), n
    saved = {}
    for key, model in (("plain", plain), ("lean", lean)):
        stored = {}  # distinct tensors autograd keeps for backward, by storage

        def pack(t, stored=stored):
            stored[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x)
        saved[key] = sum(stored.values())
    assert saved["lean"] < 0.9 * saved["plain"], saved  # B0 0.82, Lite0 0.77

"""benchmarks/roofline.py (bench_infer.py --roofline): each layer's FLOPs and bytes on a tiny EfficientNet at 32 px
against numbers counted by hand, the bandwidth read at a working set, and engine node names -> layers on real
exports (ONNX Runtime's profiler, OpenVINO's ops, torch.profiler ranges)."""

from __future__ import annotations

import collections
import dataclasses

import pytest
import torch

import effnet
from benchmarks import roofline
from tests.conftest import config_file


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = config_file(tmp_path_factory.mktemp("roofline"), "tiny", width_mult=0.25, depth_mult=0.25,
                      resolution=32, num_classes=3)
    torch.manual_seed(0)
    model = effnet.create_model(str(cfg)).eval()
    return model, roofline.count_layers(model)


def test_layers_are_the_mbconv_leaf_ops_in_order(tiny):
    model, net = tiny
    names = [layer.name for layer in net.layers]
    assert names[0] == "stem" and names[-2:] == ["head", "classifier"]
    assert [n.rpartition(".")[2] for n in names[1:4]] == ["dw", "se", "project"]  # block 0: no expansion
    assert {layer.kind for layer in net.layers} == {"stem/head", "depthwise", "SE", "conv 1x1"}
    residual = [b for b, m in model.named_modules() if getattr(m, "has_residual", False)]
    takes_add = {layer.modules[1] for layer in net.layers if len(layer.modules) == 2 and layer.name != "classifier"}
    assert takes_add == set(residual)
    assert all(layer.name == f"{block}.project" for layer in net.layers for block in layer.modules[1:2]
               if block in residual)


def test_stem_depthwise_and_se_counted_as_by_hand(tiny):
    """FLOPs of a conv = 2 x multiply-adds, its SiLU one transcendental per output element; bytes = (input + output)
    x batch + weights (with the folded BatchNorm's bias), at the precision's size."""
    model, net = tiny
    layer = {layer.name: layer for layer in net.layers}
    c = model.stem.conv.out_channels  # 3x3 stride 2: 32 px -> 16 px
    stem = layer["stem"]
    assert stem.flops == 2 * 16 * 16 * c * 3 * 9 and stem.transcendentals == 16 * 16 * c
    assert stem.bytes_at(4, "fp32") == ((3 * 32 * 32 + c * 16 * 16) * 4 + (c * 27 + c)) * 4
    assert stem.bytes_at(4, "int8") == (3 * 32 * 32 + c * 16 * 16) * 4 + (c * 27 + c)
    dw = layer["blocks.0.0.dw"]
    assert dw.flops == 2 * 16 * 16 * c * 9 and dw.activations == 2 * c * 16 * 16
    assert dw.transcendentals == 16 * 16 * c
    se, reduced = layer["blocks.0.0.se"], model.blocks[0][0].se.reduce.out_channels
    pixels = c * 16 * 16
    convs = 2 * (c * reduced) * 2  # reduce and expand on the pooled vector
    assert se.flops == convs + 2 * pixels  # pool adds, gate multiplies
    assert se.transcendentals == reduced + c  # SiLU on the reduced vector, sigmoid on the expanded one
    assert se.weights == 2 * c * reduced + reduced + c and se.activations == 2 * pixels
    assert layer["classifier"].flops == 2 * model.classifier.in_features * 3 + model.classifier.in_features * 1


def test_silu_elements_are_the_layers_transcendentals_less_the_se_sigmoids(tiny):
    """Two ways to the same count: hooks on every SiLU module, and the layer table (less each SE's sigmoid)."""
    model, net = tiny
    sigmoids = sum(m.expand.out_channels for m in model.modules() if type(m).__name__ == "SqueezeExcite")
    assert roofline.silu_elements(model) == sum(layer.transcendentals for layer in net.layers) - sigmoids
    relu6 = roofline.count_layers(effnet.create_model(model.config.replace(activation="relu6")))
    assert sum(layer.transcendentals for layer in relu6.layers) == sigmoids  # a ReLU6 counts as a FLOP instead
    assert sum(layer.flops for layer in relu6.layers) > sum(layer.flops for layer in net.layers)


def test_residual_add_belongs_to_the_projection(tiny):
    model, net = tiny
    project = next(layer for layer in net.layers if layer.name == "blocks.0.0.project")
    conv = model.blocks[0][0].project.conv  # 1x1 at 16 px; the block keeps its width: a residual add
    assert model.blocks[0][0].has_residual and project.modules == ("blocks.0.0.project", "blocks.0.0")
    out = conv.out_channels * 16 * 16
    assert project.flops == 2 * out * conv.in_channels + out  # the 1x1 conv + the add
    assert project.activations == conv.in_channels * 16 * 16 + 2 * out  # input, output, the residual's input


def roofs(matrix: float = 100.0, bandwidth=((2**20, 80.0),)) -> roofline.Roofs:
    return roofline.Roofs(tuple(bandwidth), dict.fromkeys(roofline.ELEMENT_BYTES, matrix), {}, {}, 0.0)


def test_bound_reads_the_bandwidth_curve_at_the_working_set():
    mib = 2**20
    r = roofs(bandwidth=((mib, 50.0), (2 * mib, 80.0), (64 * mib, 10.0)))
    assert r.bandwidth_at(mib // 2) == r.bandwidth_at(mib) == 80.0  # a noisy dip never lowers a rate
    assert r.bandwidth_at(10 * mib) == 80.0 and r.bandwidth_at(64 * mib) == r.dram == 10.0
    layer = roofline.Layer("x", "conv 1x1", ("x",), flops=1e6, activations=mib // 4, weights=0)
    assert roofline.bound_us(layer, r, "fp32", 1) == pytest.approx(mib / 80.0 / 1e3)  # memory-bound: 13 µs
    # 256 MiB at DRAM's 10 GB/s (27 ms) against 2.6 ms of FLOPs; in int8 a quarter of the bytes
    assert roofline.bound_us(layer, r, "fp32", 256) == pytest.approx(256 * mib / 10.0 / 1e3)
    assert roofline.bound_us(layer, r, "int8", 256) == pytest.approx(64 * mib / 10.0 / 1e3)


def test_activation_term_adds_to_the_matrix_work_without_amx_and_overlaps_with_it():
    layer = roofline.Layer("x", "conv 1x1", ("x",), flops=2e6, activations=0, weights=0, transcendentals=10**6)
    shared = roofline.Roofs(((2**20, 80.0),), dict.fromkeys(roofline.ELEMENT_BYTES, 100.0), {}, {}, 0.0,
                            activation=2.0)
    # 2 MFLOP at 100 GFLOP/s = 20 µs; 1 M SiLU elements at 2 G/s = 500 µs; memory: none
    assert roofline.bound_us(layer, shared, "fp32", 1) == pytest.approx(520.0)
    amx = dataclasses.replace(shared, shared_units=False)
    assert roofline.bound_us(layer, amx, "fp32", 1) == pytest.approx(500.0)
    assert roofline.bound_us(layer, roofs(), "fp32", 1) == pytest.approx(20.0)  # no activation roof measured


def test_network_bound_sums_its_layers_and_a_batch_out_of_cache_costs_more_per_image(tiny):
    _, net = tiny
    kib = 2**10
    r = roofs(matrix=1e4, bandwidth=((kib, 50.0), (128 * kib, 5.0)))  # compute negligible: the bytes decide
    one, many = (roofline.network_bound_us(net, r, "fp32", b) for b in (1, 16))
    assert one == pytest.approx(sum(roofline.bound_us(layer, r, "fp32", 1) for layer in net.layers))
    assert many == pytest.approx(sum(roofline.bound_us(layer, r, "fp32", 16) for layer in net.layers) / 16)
    assert many > one  # 16 images' working sets no longer fit the fast level: more µs per image
    assert roofline.network_bound_us(net, r, "int8", 16) < many  # a quarter of the bytes


def test_a_layer_with_a_faster_silu_raises_the_activation_roof_until_no_layer_beats_its_bound():
    """As with the matrix roofs: a layer whose time, less its matrix work, implies a faster SiLU than torch's
    raises the activation roof to that rate; after the raises only a memory term could still be beaten."""
    rows = (roofline.Row("a", "conv 1x1", flops=1e6, bytes=0, transcendentals=1e6, bound_us=0, measured_us=260.0),
            roofline.Row("b", "conv 1x1", flops=1e6, bytes=0, transcendentals=1e6, bound_us=0, measured_us=600.0))
    run = roofline.Run("engine", "fp32", 1, 0.0, rows, 0.0, ())
    shared = roofline.Roofs(((2**20, 1e9),), dict.fromkeys(roofline.ELEMENT_BYTES, 100.0), {}, {}, 0.0,
                            activation=2.0, activation_source="torch")
    up = roofline.raised(shared, [run])
    # layer a: 10 µs of matrix work at 100 GFLOP/s, so 1 M SiLU elements in 250 µs: 4 G/s
    assert up.activation == pytest.approx(4.0) and up.activation_source == "engine a at batch 1"
    assert any("activation roof raised from 2.00 to 4.00" in note for note in up.notes)
    layers = [roofline.Layer(r.layer, r.kind, (r.layer,), r.flops, 0, 0, int(r.transcendentals)) for r in rows]
    assert all(roofline.bound_us(layer, up, "fp32", 1) <= r.measured_us + 1e-9 for layer, r in zip(layers, rows))
    assert roofline.raised(up, [run]).activation == up.activation  # nothing left to raise


def test_relu6_twin_differs_only_in_its_activations(tiny, tmp_path):
    """The counterfactual the activation term is checked against: the same convolutions, no SiLU left; its
    timing row names the SiLU elements of the real network."""
    pytest.importorskip("openvino")
    import openvino as ov

    from effnet.deploy import export_model

    model, _ = tiny
    export_model(model, tmp_path / "effnet_ov.xml", "openvino", batch="dynamic")
    twin = roofline.relu6_twin_files(model, tmp_path)  # fp32 and int8, as a run with both kinds of engine builds

    def ops(xml):
        return collections.Counter(op.get_type_name() for op in ov.Core().read_model(str(xml)).get_ops())

    real, relu6, relu6_int8 = ops(tmp_path / "effnet_ov.xml"), ops(twin["fp32"]), ops(twin["int8"])
    assert real["Swish"] > 0 and relu6["Swish"] == relu6_int8["Swish"] == 0 and relu6["Clamp"] == real["Swish"]
    for kind in ("Convolution", "GroupConvolution", "Sigmoid", "MatMul"):
        assert relu6[kind] == real[kind] == relu6_int8[kind], kind
    assert relu6_int8["FakeQuantize"] > 0
    fp32 = next(e for e in roofline.ENGINES if e.label == "openvino fp32")
    shared = roofline.Roofs(((2**20, 80.0),), dict.fromkeys(roofline.ELEMENT_BYTES, 100.0), {}, {}, 0.0,
                            activation=2.0)
    [row] = roofline.activation_check(model, [fp32], shared, [1], 1, 2, tmp_path)
    assert row["silu_elements"] == roofline.silu_elements(model)
    assert row["predicted_us"] == pytest.approx(row["silu_elements"] / 2.0 / 1e3)


def test_onnxruntime_and_torch_profiles_map_to_layers(tiny, tmp_path):
    """ONNX Runtime's profiled nodes on effnet's export and torch.profiler's module ranges: every layer gets time,
    every conv lands in a layer, and what lands nowhere is layout, flatten or Python glue."""
    from effnet.deploy import export_model

    model, net = tiny
    onnx = tmp_path / "tiny.onnx"
    export_model(model, onnx, batch="dynamic")
    ort_engine, torch_engine = (next(e for e in roofline.ENGINES if e.runtime == k) for k in ("onnxruntime", "torch"))
    for engine, profile in ((ort_engine, roofline.ort_profile(onnx, 2, 1, 2, tmp_path)),
                            (torch_engine, roofline.torch_profile(model, net, 2, 1, 2))):
        run = roofline.compare(engine, 2, profile, net, roofs())
        assert all(r.measured_us > 0 for r in run.rows), engine.label
        assert run.measured_us == pytest.approx(sum(profile.nodes.values()))  # nothing dropped
        left = {profile.types[name] for name, *_ in run.other_nodes}
        assert left <= {"ReorderInput", "ReorderOutput", "Transpose", "Flatten", "module"}, left
        assert not any("Conv" in kind for kind in left)
    assert not list(tmp_path.glob("roofline_ort_profile*"))  # the profiler's trace is removed


def test_openvino_node_names_map_to_layers(tiny):
    """OpenVINO's ops converted from effnet's inference copy carry their module path: convs, activations, the SE
    gate, the residual add and the classifier each land in their layer."""
    pytest.importorskip("openvino")
    from effnet.deploy import openvino as ovino
    from effnet.deploy import optimize

    model, net = tiny
    index = {path: layer.name for layer in net.layers for path in layer.modules}
    ov_model = ovino.convert(optimize(model, channels_last=False), torch.zeros(1, 3, 32, 32))
    ops = {op.get_friendly_name(): op.get_type_name() for op in ov_model.get_ops()}
    layers = {name: roofline.layer_of(name, kind, net, index) for name, kind in ops.items()
              if kind in ("Convolution", "GroupConvolution", "Swish", "Multiply", "MatMul")}
    assert None not in layers.values(), [n for n, layer in layers.items() if layer is None]
    assert set(layers.values()) == {layer.name for layer in net.layers}
    add = "__module.blocks.0.0/aten::add/Add"
    assert ops.get(add) == "Add" and roofline.layer_of(add, "Add", net, index) == "blocks.0.0.project"
    assert roofline.layer_of("x_abcd_acdb___module.stem.conv/aten::_convolution/Convolution", "Reorder", net,
                             index) is None

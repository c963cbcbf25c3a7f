"""`effnet family`: counts on the meta device equal real ones; the paper's Table 2 with peers; Table 4 protocol."""

import pytest
import torch
from PIL import Image

import effnet
from effnet.models.paper import latency
from effnet.models.paper import accounting, peers
from tests.conftest import run_cli


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b1"])
def test_meta_device_counts_equal_real_forward_counts(name):
    meta = accounting.profile(name)  # a name: built on the meta device
    real = accounting.profile(effnet.create_model(name))  # a module: real tensors, real convolutions
    assert real.params == meta.params and real.macs == meta.macs
    assert [(r.params, r.macs, r.resolution, r.channels) for r in real.rows] == \
        [(r.params, r.macs, r.resolution, r.channels) for r in meta.rows]


def test_torchvision_peers_match_the_papers_params_within_2_percent():
    built = [r for r in peers.TABLE2_ROWS if r.torchvision]
    assert {r.torchvision for r in built} >= {"resnet50", "resnet152", "inception_v3"}
    for row in built:
        m = accounting.count_peer(row)
        params_delta, macs_delta = m.delta()
        assert abs(params_delta) < 0.02, (row.name, m.params)
        assert abs(macs_delta) < 0.06, (row.name, m.macs)  # the paper rounds FLOPs to 2 digits
    assert next(p for p in accounting.build_peer(built[0]).parameters()).device.type == "meta"


def test_table2_rows_are_the_papers():
    rows = peers.TABLE2_ROWS
    assert len(rows) == 24 and sum(1 for r in rows if r.effnet) == 8
    # each group's ratios as printed agree with the published numbers (rounded in the paper)
    lead = {r.group: r for r in rows if r.effnet}
    for r in rows:
        assert abs(r.params_m / lead[r.group].params_m - r.ratios[0]) < 0.15, r.name
    gpipe = rows[-1]
    assert gpipe.params_m == 557 and gpipe.flops_b is None and gpipe.group == "B7"
    assert accounting.PAPER_TABLE["efficientnet_b4"] == (19, 4.2, 82.9)


def test_family_peers_cli_prints_table_2_and_draws_figures_1_and_5(tmp_path):
    chart = tmp_path / "fig.png"
    proc = run_cli("family", "--peers", "--chart", str(chart))
    out = proc.stdout
    for name in ("ResNet-152 (He et al., 2016)", "GPipe", "AmoebaNet-C", "EfficientNet-B7", "arXiv:1905.11946v5"):
        assert name in out
    resnet50 = next(line for line in out.splitlines() if line.startswith("ResNet-50"))
    assert "25.56M" in resnet50 and "4.9x" in resnet50 and "torchvision resnet50" in resnet50
    assert "counting" in proc.stderr  # progress on stderr
    img = Image.open(chart)
    assert img.format == "PNG" and img.size[0] > 2 * img.size[1] > 500  # two panels side by side


def test_latency_protocol_times_a_pair_in_both_engines():
    claim = peers.LatencyClaim("efficientnet_b0", "resnet18", "ResNet-18", None, None, "test pair")
    torch.set_num_threads(1)
    for engine in latency.ENGINES:
        t = latency.time_pair(claim, engine, runs=3, warmup=1)
        assert t.effnet_ms > 0 and t.peer_ms > 0 and t.speedup == t.peer_ms / t.effnet_ms
    text = latency.format_table4([t])
    assert "1 thread" in text and "ResNet-18" in text and "arXiv:1905.11946v5 Table 4" in text
    assert peers.LATENCY_PAIRS[0].paper_speedup == pytest.approx(5.65, abs=0.01)  # 0.554 s / 0.098 s


def test_latency_rejects_a_bad_run_count():
    proc = run_cli("family", "--latency", "--runs", "0", check=False)
    assert proc.returncode == 2 and "--runs" in proc.stderr and "Traceback" not in proc.stderr

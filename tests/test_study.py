"""`effnet study`: depth-, width-, resolution-only and compound models at matched MACs, trained for real on digit
scans; a study stopped part-way keeps its finished runs and resumes a cut one from its checkpoint; `effnet explain
--compare --study` draws all five (the paper's Figure 7)."""

import json

from PIL import Image

from tests.conftest import config_file, digit_subset, run_cli

KINDS = ["base", "compound", "width", "depth", "resolution"]


def _weights_mtime(out, kind):
    phi = 0 if kind == "base" else 1
    return (out / "runs" / f"{kind}-phi{phi}" / "model.safetensors").stat().st_mtime_ns


def test_study_resumes_where_it_was_cut_and_feeds_figure7(digits, tmp_path):
    data = digit_subset(digits, tmp_path / "data", 16, 4)
    base = config_file(tmp_path, "tiny", width_mult=0.25, depth_mult=0.34, resolution=32)
    out = tmp_path / "study"
    args = ("study", str(data), "--base", str(base), "--max-phi", "1", "--epochs", "1", "--batch-size", "8",
            "--out", str(out))
    run_cli(*args)
    rows = {r["kind"]: r for r in json.loads((out / "study.json").read_text())}
    assert sorted(rows) == sorted(KINDS)
    b, comp = rows["base"], rows["compound"]
    for kind in ("width", "depth", "resolution"):  # one dimension scaled alone to the compound model's MACs
        assert abs(rows[kind]["macs"] / comp["macs"] - 1) < 0.15, (kind, rows[kind]["macs"], comp["macs"])
    assert rows["width"]["width_mult"] > b["width_mult"] and rows["width"]["resolution"] == b["resolution"]
    assert rows["depth"]["depth_mult"] > b["depth_mult"] and rows["depth"]["width_mult"] == b["width_mult"]
    assert rows["resolution"]["resolution"] > b["resolution"] and rows["resolution"]["depth_mult"] == b["depth_mult"]
    assert all(0.0 <= r["top1"] <= 100.0 for r in rows.values())

    # cut it: the depth run lost its end (no summary, no weights) but kept its checkpoint; the resolution run is gone
    kept = {k: _weights_mtime(out, k) for k in ("base", "compound", "width")}
    depth = out / "runs" / "depth-phi1"
    (depth / "summary.json").unlink()
    (depth / "model.safetensors").unlink()
    for f in (out / "runs" / "resolution-phi1").iterdir():
        f.unlink()
    (out / "study.json").unlink()
    again = run_cli(*args).stdout
    assert again.count("(kept)") == 3 and again.count("(resumed)") == 1, again
    assert {k: _weights_mtime(out, k) for k in kept} == kept  # not trained again
    assert len((depth / "metrics.csv").read_text().strip().splitlines()) == 1 + 1  # its one epoch, not trained again
    again_rows = {r["kind"]: r for r in json.loads((out / "study.json").read_text())}
    assert sorted(again_rows) == sorted(KINDS)
    assert again_rows["width"]["top1"] == rows["width"]["top1"]

    photo = next((data / "val" / "7").iterdir())
    sheet = tmp_path / "fig7.png"
    drawn = run_cli("explain", "--compare", "--study", str(out), str(photo), "-o", str(sheet)).stdout
    assert drawn.count("p(") == 5 and str(sheet) in drawn
    for title in ("baseline", "deeper", "wider", "higher resolution", "compound scaling"):
        assert title in drawn
    img = Image.open(sheet)
    assert img.format == "PNG" and img.size[0] > 4 * img.size[1]  # the photo and five maps in one row

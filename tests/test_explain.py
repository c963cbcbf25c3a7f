"""`effnet explain`: class activation maps of real weights on a real photo land on the object."""

import json

import numpy as np
from PIL import Image

from tests.conftest import run_cli

# skimage.data.chelsea (451 x 300): the cat's eyes, nose and muzzle, picked by looking at the photo
FACE = (120, 80, 340, 260)  # left, top, right, bottom


def test_explain_pretrained_lite0_peaks_on_the_cats_face(photos, tmp_path):
    cam, heat = tmp_path / "cam.png", tmp_path / "map.png"
    proc = run_cli("explain", "--model", "efficientnet_lite0", "--pretrained", str(photos["chelsea"]),
                   "-o", str(cam), "--heatmap", str(heat), "--json")
    info = json.loads(proc.stdout)
    assert info["class_name"] in {"tabby", "tiger cat", "Egyptian cat"} and info["class_index"] == info["predicted"]
    photo = Image.open(photos["chelsea"])
    assert Image.open(cam).size == photo.size and Image.open(cam).mode == "RGB"
    m = np.asarray(Image.open(heat), dtype=np.float32)
    assert m.shape == (photo.size[1], photo.size[0]) and m.max() > 200
    y, x = np.unravel_index(np.argmax(m), m.shape)
    left, top, right, bottom = FACE
    assert left <= x <= right and top <= y <= bottom, (x, y)
    assert abs(x - info["peak"][0]) <= 2 and abs(y - info["peak"][1]) <= 2  # the PNG rounds the map to 8 bits
    face = np.zeros_like(m, dtype=bool)
    face[top:bottom, left:right] = True
    seen = m > 0  # the centre crop the model saw
    assert m[face].mean() > 1.5 * m[seen & ~face].mean()  # measured: 1.75x


def test_explain_a_given_class_and_its_errors(photos, tmp_path):
    proc = run_cli("explain", "--model", "efficientnet_lite0", "--pretrained", str(photos["chelsea"]),
                   "-o", str(tmp_path / "c.png"), "--class", "967", "--method", "layercam", "--json")
    info = json.loads(proc.stdout)
    assert info["class_name"] == "espresso" and info["probability"] < 0.01 and info["method"] == "layercam"
    for args, words in ((["--class", "1000"], "classes 0..999"), (["--layer", "nope"], "no layer 'nope'"), ([], "")):
        model = ["--model", "efficientnet_lite0", "--pretrained"] if args else []
        bad = run_cli("explain", *model, str(photos["chelsea"]), "-o", str(tmp_path / "x.png"), *args, check=False)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr and words in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_explain_compare_draws_one_row_per_model(photos, tmp_path):
    sheet = tmp_path / "fig7.png"
    out = run_cli("explain", "--compare", "--models", "efficientnet_lite0", "efficientnet_lite1", "--pretrained",
                  str(photos["chelsea"]), "-o", str(sheet)).stdout
    assert out.count("p(") == 2 and str(sheet) in out
    img = Image.open(sheet)
    assert img.format == "PNG" and img.size[0] > 2 * img.size[1]
    missing = run_cli("explain", "--compare", "--study", str(tmp_path), str(photos["chelsea"]), check=False)
    assert missing.returncode == 2 and "study.json" in missing.stderr

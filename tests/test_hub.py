"""Hugging Face Hub folders both ways (issue 24): a folder timm wrote loads in effnet with its weights and its
preprocessing (local-dir: and hf-hub:, the latter through huggingface_hub against a loopback server the test
starts, then offline from huggingface_hub's cache); effnet's own folders load in timm with equal logits (the
trained-model round trip is in test_train's fine-tune test); what timm cannot rebuild is refused."""

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading

import pytest
import torch

import effnet
from effnet.data import eval_transform, load_image
from tests.conftest import ROOT, config_file, randomize_bn, run_cli

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def timm_folder(tmp_path_factory):
    """A timm Lite0 (TF padding, 3 classes, non-ImageNet preprocessing) saved by timm in its Hub layout."""
    from timm.models import save_for_hf

    model = timm.create_model("tf_efficientnet_lite0", num_classes=3).eval()
    randomize_bn(model)
    folder = tmp_path_factory.mktemp("timm_folder")
    save_for_hf(model, folder, safe_serialization=True, model_config={"label_names": ["cat", "cup", "rocket"]},
                data_config={"input_size": (3, 96, 96), "crop_pct": 0.9, "interpolation": "bilinear"})
    return model, folder


def test_a_timm_folder_loads_with_its_weights_and_preprocessing(timm_folder, photos):
    reference, folder = timm_folder
    model = effnet.create_model(f"local-dir:{folder}").eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max() <= 1e-5
    timm_cfg = timm.data.resolve_data_config({}, model=timm.create_model(f"local-dir:{folder}", pretrained=True))
    c = model.config
    assert (c.resolution, c.crop_pct, c.interpolation, c.mean, c.std) == (
        timm_cfg["input_size"][-1], timm_cfg["crop_pct"], timm_cfg["interpolation"], tuple(timm_cfg["mean"]),
        tuple(timm_cfg["std"]))
    assert c.class_names == ("cat", "cup", "rocket")
    transform = timm.data.create_transform(**timm_cfg)
    for path in photos.values():  # the same photo, each library's preprocessing from the folder: the same answer
        image = load_image(path)
        with torch.no_grad():
            ours = model(eval_transform(c)(image)[None])
            theirs = reference(transform(image)[None])
        assert ours.argmax() == theirs.argmax() and (ours - theirs).abs().max() < 0.05


class _HubFiles(http.server.BaseHTTPRequestHandler):
    """The Hub's file route (/ORG/NAME/resolve/REVISION/FILE) for one folder, as huggingface_hub fetches it."""

    folder = None

    def _reply(self, body: bool) -> None:
        path = self.folder / self.path.rsplit("/", 1)[-1]
        if "/resolve/" not in self.path or not path.is_file():
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.end_headers()
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("X-Repo-Commit", "0" * 40)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self):
        self._reply(False)

    def do_GET(self):
        self._reply(True)

    def log_message(self, *args):
        pass


def test_hf_hub_names_download_through_huggingface_hub_then_work_offline(timm_folder, photos, tmp_path):
    reference, folder = timm_folder
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_HubFiles,), {"folder": folder}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_HUB_CACHE": str(tmp_path),
           "HF_HUB_DISABLE_TELEMETRY": "1"}

    def predict(**extra):
        return subprocess.run([sys.executable, "-m", "effnet.cli", "predict", "--model", "hf-hub:org/lite",
                               "--backend", "torch", "--json", str(photos["chelsea"])], capture_output=True,
                              text=True, timeout=300, cwd=ROOT, env={**env, **extra})

    online = predict()
    assert online.returncode == 0, online.stderr
    server.shutdown()
    offline = predict(HF_HUB_OFFLINE="1")  # the cache answers; nothing is fetched
    assert offline.returncode == 0, offline.stderr
    assert json.loads(online.stdout) == json.loads(offline.stdout)
    top = json.loads(online.stdout)[0]["predictions"]
    assert [p["label"] for p in top] != [] and {p["label"] for p in top} == {"cat", "cup", "rocket"}
    missing = subprocess.run([sys.executable, "-m", "effnet.cli", "predict", "--model", "hf-hub:org/other",
                              str(photos["chelsea"])], capture_output=True, text=True, timeout=300, cwd=ROOT,
                             env={**env, "HF_HUB_OFFLINE": "1"})
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "hf-hub:org/other" in missing.stderr


@pytest.mark.parametrize("name,kw", [("efficientnet_b0", {}), ("efficientnet_lite0", {"tf_padding": True}),
                                     ("efficientnetv2_b0", {"tf_padding": True}), ("efficientnetv2_rw_t", {})])
def test_an_effnet_folder_loads_in_timm_with_equal_logits(name, kw, tmp_path):
    model = effnet.create_model(name, num_classes=4, **kw).eval()
    randomize_bn(model)
    effnet.save_pretrained(model, tmp_path / "hub")
    theirs = timm.create_model(f"local-dir:{tmp_path / 'hub'}", pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - theirs(x)).abs().max() <= 1e-5
    assert tuple(theirs.pretrained_cfg["mean"]) == model.config.mean


def test_an_architecture_timm_cannot_build_is_refused_before_writing(tmp_path):
    scaled = config_file(tmp_path, "efficientnet_b0", width_mult=1.3, resolution=64)
    proc = run_cli("export", str(scaled), "--format", "hub", "-o", str(tmp_path / "hub"), check=False)
    assert proc.returncode == 2 and "timm cannot rebuild" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "hub").exists()

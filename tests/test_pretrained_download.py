"""On-demand weights, offline: a loopback HTTP server serves files this test writes (random weights in
torchvision and timm naming) and the registry or EFFNET_MIRROR points at it."""

import functools
import hashlib
import http.server
import os
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import effnet
from effnet.data import eval_transform
from effnet.models.zoo import downloads
from effnet.models.zoo.classifier_weights import PretrainedWeights, find_weights, register_weights, unregister_weights
from tests.conftest import randomize_bn, run_cli

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files; under /cut/ it promises the whole file but hangs up halfway."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.hits.append(self.path)
        if self.path.startswith("/cut/"):
            data = (Path(self.directory) / self.path[len("/cut/"):]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        super().do_GET()


class _Server(http.server.ThreadingHTTPServer):
    """A client that hangs up mid-file on purpose (a download cut off past twice its published size) is no error
    here: socketserver's ``handle_error`` would print the broken pipe's traceback into a passing run. Anything
    else still is."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    httpd = _Server(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    httpd.hits = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.root, httpd.url = root, f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    path = tmp_path / "effnet_home"
    monkeypatch.setenv("EFFNET_HOME", str(path))
    monkeypatch.delenv("EFFNET_MIRROR", raising=False)
    return path


@pytest.fixture
def entry_for():
    added = []

    def make(**fields):
        # the published parameter count bounds the download (twice the file's size): the architecture's own
        params_m = sum(p.numel() for p in effnet.create_model(fields["model"]).parameters()) / 1e6
        entry = PretrainedWeights(**{"top1": 0.0, "params_m": params_m, **fields})
        register_weights(entry)
        added.append(entry.name)
        return entry

    yield make
    for name in added:
        unregister_weights(name)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def served_torchvision_b0(root: Path) -> tuple[torch.nn.Module, Path]:
    """torchvision's B0 with non-trivial BatchNorm statistics, saved as ``tv_b0.pth`` where a loopback server
    serves ``root``: the reference model and the file a test registry row points at."""
    src = torchvision.models.efficientnet_b0(weights=None).eval()
    randomize_bn(src)
    path = root / "tv_b0.pth"
    torch.save(src.state_dict(), path)
    return src, path


def _photos() -> list[Image.Image]:
    import skimage.data

    return [Image.fromarray(np.asarray(getattr(skimage.data, n)())).convert("RGB") for n in ("chelsea", "coffee")]


def _photo_batch(config):
    return torch.stack([eval_transform(config)(img) for img in _photos()])


def test_torchvision_file_downloaded_checked_converted_once(server, home, entry_for):
    src, path = served_torchvision_b0(server.root)
    entry = entry_for(model="efficientnet_b0", tag="test_tv", origin="test", source="torchvision",
                      url=f"{server.url}/tv_b0.pth", sha256=_sha256(path), bn_eps=1e-5, tf_padding=False,
                      resolution=200, crop_pct=200 / 230, interpolation="bilinear")
    model = effnet.create_model("efficientnet_b0", pretrained="test_tv").eval()
    assert (model.config.resolution, model.config.interpolation, model.config.bn_eps) == (200, "bilinear", 1e-5)
    x = _photo_batch(model.config)
    assert x.shape[-1] == 200
    with torch.no_grad():
        assert (model(x) - src(x)).abs().max().item() <= 1e-4
    cached = downloads.cache_path(entry)
    # the converted file and its record (sha256, size), nothing else
    assert sorted(p.name for p in cached.parent.iterdir()) == [cached.name, cached.name + ".sha256"]
    assert effnet.load(cached).config == model.config  # the preprocessing travels with the file
    hits = len(server.hits)
    effnet.create_model("efficientnet_b0", pretrained="test_tv")
    assert len(server.hits) == hits == 1  # converted once, then read from the cache


def test_timm_safetensors_through_mirror(server, home, entry_for, monkeypatch):
    src = timm.create_model("tf_efficientnet_lite0").eval()
    randomize_bn(src)
    path = server.root / "lite0_timm.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    # the published host is never contacted: .invalid names do not resolve
    entry_for(model="efficientnet_lite0", tag="test_timm", origin="test", source="timm",
              url="https://weights.invalid/releases/lite0_timm.safetensors", sha256=_sha256(path)[:8],
              bn_eps=1e-3, tf_padding=True, resolution=225, crop_pct=0.9, mean=(0.5,) * 3, std=(0.5,) * 3)
    monkeypatch.setenv("EFFNET_MIRROR", server.url + "/")
    model = effnet.create_model("efficientnet_lite0", pretrained="test_timm").eval()
    assert server.hits == ["/lite0_timm.safetensors"]
    x = _photo_batch(model.config)  # odd size: TF's asymmetric SAME padding matters
    with torch.no_grad():
        assert (model(x) - src(x)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("row,reference", [("efficientnetv2_b0.tf_in1k", "tf_efficientnetv2_b0"),
                                           ("efficientnetv2_s.tv_in1k", "efficientnet_v2_s")])
def test_v2_row_downloads_through_the_mirror(row, reference, server, home, entry_for, monkeypatch):
    """A published EfficientNetV2 row, as registered (padding, eps, preprocessing), fetched under its published
    file name from the mirror: random weights in that naming stand in for the file, so the test row carries their
    sha256 in place of the published one."""
    import dataclasses

    published = find_weights(*row.split("."))
    src = timm.create_model(reference) if published.source == "timm" else \
        getattr(torchvision.models, reference)(weights=None)
    src.eval()
    randomize_bn(src)
    torch.save(src.state_dict(), server.root / published.file_name)
    fields = dataclasses.asdict(published) | {"tag": "test_v2", "sha256": _sha256(server.root / published.file_name)}
    entry = entry_for(**fields)
    monkeypatch.setenv("EFFNET_MIRROR", server.url)
    model = effnet.create_model(published.model, pretrained="test_v2").eval()
    assert server.hits == [f"/{published.file_name}"]
    config = model.config
    assert (config.tf_padding, config.bn_eps, config.mean, config.crop_pct) == (
        published.tf_padding, published.bn_eps, published.mean, published.crop_pct)
    # at 64 px every stride-2 conv of the TF port pads asymmetrically (odd sizes pad as symmetric padding does)
    x = torch.stack([eval_transform(config, resolution=64)(img) for img in _photos()])
    with torch.no_grad():
        assert (model(x) - src(x)).abs().max().item() <= 1e-4
    assert effnet.load(downloads.cache_path(entry)).config == config


def test_a_damaged_cache_file_is_removed_and_fetched_again(server, home, entry_for, capfd):
    src, path = served_torchvision_b0(server.root)
    entry = entry_for(model="efficientnet_b0", tag="test_cache", origin="test", source="torchvision",
                      url=f"{server.url}/tv_b0.pth", sha256=_sha256(path), bn_eps=1e-5, tf_padding=False,
                      resolution=64, crop_pct=0.875)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = effnet.create_model("efficientnet_b0", pretrained="test_cache").eval()(x)
    cached = downloads.cache_path(entry)
    stale = cached.parent / ".tv_b0.pth.0123.partial"  # what a download killed mid-way leaves
    stale.write_bytes(b"half a file")
    os.utime(stale, (time.time() - 2 * downloads.STALE_PARTIAL_S,) * 2)
    for damage in (lambda b: b[:-1000] + bytes(x ^ 0xFF for x in b[-1000:]),  # flipped bytes
                   lambda b: b[: len(b) // 2]):  # cut short
        cached.write_bytes(damage(cached.read_bytes()))
        capfd.readouterr()
        with torch.no_grad():
            got = effnet.create_model("efficientnet_b0", pretrained="test_cache").eval()(x)
        err = capfd.readouterr().err  # the download's progress bar, and one line about the cache
        (line,) = [line for line in err.splitlines() if line.startswith("warning:")]
        assert "is damaged" in line and "fetching it again" in line, err
        assert torch.equal(got, want)  # the fresh copy, not the damaged one
    assert not stale.exists() and server.hits == ["/tv_b0.pth"] * 3


def test_a_download_larger_than_its_weights_is_cut_off(server, home, entry_for):
    path = server.root / "huge.pth"
    path.write_bytes(b"\0" * (3 * 2**20))
    entry = entry_for(model="efficientnet_b0", tag="test_huge", origin="test", source="torchvision",
                      url=f"{server.url}/huge.pth", sha256=_sha256(path), bn_eps=1e-5, tf_padding=False,
                      resolution=64, crop_pct=0.875, params_m=0.1)  # a 0.4 MB file, 3 MB sent
    with pytest.raises(downloads.DownloadError, match="over twice the published size"):
        effnet.create_model("efficientnet_b0", pretrained="test_huge")
    assert not any(downloads.cache_path(entry).parent.iterdir())


def test_corrupt_download_keeps_nothing(server, home, entry_for):
    path = server.root / "tv_b0.pth"
    torch.save(torchvision.models.efficientnet_b0(weights=None).state_dict(), path)
    entry = entry_for(model="efficientnet_b0", tag="test_bad", origin="test", source="torchvision",
                      url=f"{server.url}/tv_b0.pth", sha256="0" * 64, bn_eps=1e-5, tf_padding=False,
                      resolution=224, crop_pct=0.875)
    with pytest.raises(downloads.DownloadError, match="sha256 mismatch"):
        effnet.create_model("efficientnet_b0", pretrained="test_bad")
    assert not downloads.cache_path(entry).parent.exists() or not any(downloads.cache_path(entry).parent.iterdir())


def test_convert_a_file_fetched_elsewhere(server, home, tmp_path):
    """The way out the download error names: effnet convert FILE --model NAME.TAG (sha256 checked)."""
    entry = find_weights("efficientnet_b0", "tv_in1k")
    wrong = tmp_path / entry.file_name
    torch.save(torchvision.models.efficientnet_b0(weights=None).state_dict(), wrong)
    with pytest.raises(downloads.DownloadError, match="sha256 mismatch"):
        downloads.convert_file(entry, wrong, downloads.cache_path(entry))
    assert not downloads.cache_path(entry).exists()


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: connecting is refused


def _write_published_name(server, subdir: str, data: bytes) -> str:
    name = find_weights("efficientnet_b0", "tv_in1k").file_name
    (server.root / subdir).mkdir(exist_ok=True)
    (server.root / subdir / name).write_bytes(data)
    return name


def test_truncated_file_on_server_keeps_nothing(server, home, monkeypatch):
    real = server.root / "real.pth"
    torch.save(torchvision.models.efficientnet_b0(weights=None).state_dict(), real)
    _write_published_name(server, "half", real.read_bytes()[: real.stat().st_size // 2])
    monkeypatch.setenv("EFFNET_MIRROR", server.url + "/half")
    with pytest.raises(downloads.DownloadError, match="sha256 mismatch .*corrupt or truncated file, nothing was kept"):
        effnet.create_model("efficientnet_b0", pretrained="tv_in1k")
    assert not [p for p in home.rglob("*") if p.is_file()]


@pytest.mark.parametrize("case", ["corrupt", "cut", "404", "refused"])
def test_cli_download_errors_are_one_line(case, server, home, monkeypatch):
    real = server.root / "real.pth"
    torch.save(torchvision.models.efficientnet_b0(weights=None).state_dict(), real)
    data = real.read_bytes()
    mirror = {"corrupt": "/corrupt", "cut": "/cut/full", "404": "/empty"}
    if case == "corrupt":
        _write_published_name(server, "corrupt", bytes(reversed(data)))
    elif case == "cut":  # the server promises the whole file and hangs up halfway
        _write_published_name(server, "full", data)
    url = f"http://127.0.0.1:{_refused_port()}" if case == "refused" else server.url + mirror[case]
    monkeypatch.setenv("EFFNET_MIRROR", url)
    # a hang guard, not a speed test: a refused or missing mirror fails at once (the connect timeout is 5 s)
    proc = run_cli("weights", "download", "efficientnet_b0.tv_in1k", "-q", check=False, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    if case in ("corrupt", "cut"):
        assert "sha256" in lines[0] and "nothing was kept" in lines[0]
        assert ("cut short" in lines[0]) if case == "cut" else ("mismatch" in lines[0])
    else:
        assert url in lines[0] and "effnet convert" in lines[0]
        assert ("404" in lines[0]) if case == "404" else ("refused" in lines[0].lower())
    assert not home.exists() or not [p for p in home.rglob("*") if p.is_file()]


def test_weights_command_lists_registry_and_cache(home):
    entry = find_weights("efficientnet_lite3")
    src = timm.create_model("tf_efficientnet_lite3")
    downloads.cache_path(entry).parent.mkdir(parents=True)
    state = home / "lite3.pth"
    torch.save(src.state_dict(), state)
    downloads.convert_file(entry, state, downloads.cache_path(entry), check_sha=False)  # as if downloaded earlier
    state.unlink()
    out = run_cli("weights").stdout.splitlines()
    assert out[0].split() == ["model", "tag", "source", "published", "res", "size", "cached"]
    rows = {tuple(line.split()[:2]): line for line in out[1:-1]}
    assert len(rows) == 57 + 21 + 23  # EfficientNet's, EfficientNetV2's, then the COCO detectors
    assert "AP 34.2" in rows[("efficientdet_d0", "tf_coco")] and " 512 " in rows[("efficientdet_d0", "tf_coco")]
    assert rows[("efficientnet_lite3", "tf_in1k")].split()[-1] == "cached"
    assert rows[("efficientnet_b0", "tv_in1k")].split()[-1] == "-"
    assert "77.69" in rows[("efficientnet_b0", "tv_in1k")] and " 224 " in rows[("efficientnet_b0", "tv_in1k")]

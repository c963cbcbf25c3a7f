"""Tensors in the layout a native runtime reads: every public transform returns C-contiguous memory, checked the way
it went wrong -- its output handed to ExecuTorch's own runtime, which reads a tensor's memory as dense whatever its
strides say (a channels-last view of the cat photo was class 904 there, 282 in PyTorch) -- and every wrapper that
hands memory to a runtime (PteRunner, ort_run, ov_run / Runner) gives the same answer for a channels-last, strided
or float64 batch as for a contiguous float32 one. A pretrained Lite0 on real photos, each format exported once."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

import effnet
from effnet.data import eval_transform, train_transform
from effnet.data.coco import detection_eval_image, detection_train_transform
from effnet.data.masks import letterbox_image
from effnet.deploy.export import EXTENSIONS, export_model

pytest.importorskip("executorch.runtime", reason="ExecuTorch is not installed (pip install 'effnet[edge]')")

RES = 224  # the weights' own resolution: the .pte's input size
PHOTOS = ("chelsea", "coffee", "astronaut")


@pytest.fixture(scope="module")
def lite0():
    return effnet.create_model("efficientnet_lite0", pretrained=True).eval()


@pytest.fixture(scope="module")
def images() -> dict[str, Image.Image]:
    import skimage.data

    return {name: Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB") for name in PHOTOS}


@pytest.fixture(scope="module")
def exported(lite0, tmp_path_factory):
    """``fmt`` -> the pretrained Lite0 exported (and verified) once in that format."""
    folder, done = tmp_path_factory.mktemp("exported"), {}

    def get(fmt: str):
        if fmt not in done:
            path = folder / f"lite0.{EXTENSIONS[fmt]}"
            export_model(lite0, path, fmt, resolution=RES)
            done[fmt] = path
        return done[fmt]

    return get


def _square(photo: Image.Image, side: int = RES) -> Image.Image:
    """The photo's centre square at ``side`` px: an image the transforms need not resize (nor pad)."""
    s = min(photo.size)
    left, top = (photo.width - s) // 2, (photo.height - s) // 2
    return photo.crop((left, top, left + s, top + s)).resize((side, side), Image.BICUBIC)


def _detection_train(config, photo: Image.Image) -> torch.Tensor:
    """The detector's training augmentation of ``photo`` with one box in its middle."""
    w, h = photo.size
    box = tv_tensors.BoundingBoxes([[w / 4, h / 4, 3 * w / 4, 3 * h / 4]], format="XYXY", canvas_size=(h, w))
    x, _ = detection_train_transform(config.mean, config.std, RES)(photo, dict(boxes=box, labels=torch.tensor([0])))
    return x


def _transforms(config):
    """Each public transform, as photo -> one (3, RES, RES) input; each kind of input that took another path
    through torchvision (resized or already at its size, augmented, letterboxed or padded)."""
    from effnet.detect.predictor import preprocess as detector_batch
    from effnet.segment.predictor import preprocess as segmenter_batch

    mean, std = config.mean, config.std
    return {
        "eval": lambda im: eval_transform(config)(im),
        "eval, photo at the crop size": lambda im: eval_transform(config.replace(crop_pct=1.0))(_square(im)),
        "train": lambda im: train_transform(config, RES)(im),
        "train randaugment": lambda im: train_transform(config, RES, "randaugment")(im),
        "train autoaugment": lambda im: train_transform(config, RES, "autoaugment")(im),
        "train, photo at its size": lambda im: train_transform(config, RES, scale_min=1.0, hflip=0)(_square(im)),
        "detector eval (letterbox)": lambda im: detection_eval_image(im, mean, std, RES)[0],
        "detector eval, square photo": lambda im: detection_eval_image(_square(im, 300), mean, std, RES)[0],
        "detector train": lambda im: _detection_train(config, im),
        "detector Predictor batch": lambda im: detector_batch(config, [im])[0][0],
        "segmenter letterbox": lambda im: letterbox_image(TF.pil_to_tensor(im), mean, std, RES)[0],
        "segmenter Predictor batch": lambda im: segmenter_batch(config, [im])[0][0],
    }


def test_every_public_transform_gives_pytorchs_class_in_executorchs_runtime(lite0, images, exported):
    from executorch.runtime import Runtime

    # the runtime itself, not PteRunner (which makes its input contiguous): what a user of the .pte meets
    method = Runtime.get().load_program(str(exported("executorch"))).load_method("forward")
    classes = {}
    transforms = _transforms(lite0.config)
    # eval on every photo; each other transform on one of them in turn (one forward pass of each runtime apiece)
    cases = [("eval", photo) for photo in PHOTOS] + [(name, PHOTOS[i % len(PHOTOS)])
                                                     for i, name in enumerate(transforms) if name != "eval"]
    for name, photo in cases:
        x = transforms[name](images[photo])
        assert x.shape == (3, RES, RES) and x.dtype == torch.float32, (name, photo)
        assert x.is_contiguous(), (name, photo, x.stride())
        with torch.no_grad():
            want = lite0(x[None])
        got = method.execute([x[None]])[0]
        assert int(got.argmax()) == int(want.argmax()), (name, photo)
        assert float((got - want).abs().max()) < 1e-3, (name, photo)
        classes[name, photo] = int(want.argmax())
    # the photos as the model sees them for evaluation: the cat, the espresso
    assert classes["eval", "chelsea"] in (281, 282, 285) and classes["eval", "coffee"] == 967


def _layouts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same batch in memory a runtime must not misread: channels-last, a strided view (W and H swapped
    in memory), float64."""
    strided = x.transpose(2, 3).contiguous().transpose(2, 3)
    cases = {"channels_last": x.contiguous(memory_format=torch.channels_last), "strided": strided,
             "float64": x.double()}
    assert not any(v.is_contiguous() for k, v in cases.items() if k != "float64")
    return cases


@pytest.fixture(scope="module")
def batch(lite0, images):
    tf = eval_transform(lite0.config)
    x = torch.stack([tf(images[p]) for p in PHOTOS])
    with torch.no_grad():
        return x, lite0(x).numpy()


@pytest.mark.parametrize("fmt", ["executorch", "onnx", "openvino"])
def test_runtime_wrappers_read_any_layout_as_its_values(fmt, batch, exported):
    from effnet.deploy.executorch import PteRunner
    from effnet.deploy.openvino import Runner, compile_ir, ov_run
    from effnet.deploy.ort import ort_run, ort_session

    x, want = batch
    path = exported(fmt)
    if fmt == "executorch":
        runners = {"PteRunner": PteRunner(path)}
    elif fmt == "onnx":
        session = ort_session(str(path))
        runners = {"ort_run": lambda v: ort_run(session, v, batch_dynamic=False)}
    else:
        compiled = compile_ir(str(path))
        runners = {"ov_run": lambda v: ov_run(compiled, v), "Runner": Runner(path)}
    for name, run in runners.items():
        plain = run(x)
        assert np.abs(plain - want).max() < 1e-3 and (plain.argmax(1) == want.argmax(1)).all(), name
        for layout, v in _layouts(x).items():
            got = run(v)
            assert np.abs(got - plain).max() < 1e-5, (name, layout)
            assert (got.argmax(1) == want.argmax(1)).all(), (name, layout)

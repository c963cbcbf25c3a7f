"""End-to-end detection speed on the CPU: preprocessed image tensor in, final boxes out (decoding + NMS included),
effnet's engines against effdet's ``DetBenchPredict`` with the same weights.

Engines: effdet DetBenchPredict (eager, the reference); effnet ``Predictor`` in PyTorch (eager: effdet's exact
boxes); effnet's inference copy (BatchNorm folded, channels_last) + the same post-processing; the end-to-end graph
(decoding and NMS inside) in ONNX Runtime, OpenVINO fp32 and OpenVINO int8 (NNCF, calibrated on scikit-image photos);
the raw outputs as an ExecuTorch + XNNPACK program, fp32 and int8 (PT2E, the same photos), decoded + NMS'd in Python.
Models: Lite0 at 320 px and D0 at 512 px (their published input sizes), batch 1 and 8. The exported graph has batch
1: a batch of 8 runs image by image.

Weights: effdet's random-initialised ``tf_efficientdet_*`` with varied BatchNorm statistics, imported into effnet
(the parity test shows these give effdet's boxes); with the randomised statistics a few hundred (anchor, class)
candidates pass effnet's 0.05 score threshold on the photos (Lite0: 256 of 5000), as with trained weights. (effdet always runs NMS on its 5000 top candidates; effnet drops
those under 0.05 first, as torchvision's RetinaNet does -- part of the measured difference.)

One run measures every engine, interleaving the repetitions (A, B, C, A, B, C, ...) so the shared machine's noise
hits all alike; medians, ratios to effdet, and each engine's peak RSS (in a child process that builds only it).

    python benchmarks/bench_detect_infer.py [--reps 5] [--threads 2] [--json benchmarks/results/bench_detect_infer.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from effnet.cpu import machine  # noqa: E402

MODELS = {"lite0": ("efficientdet_lite0", "tf_efficientdet_lite0", 320), "d0": ("efficientdet_d0", "tf_efficientdet_d0", 512)}
ENGINES = ("effdet DetBenchPredict", "effnet torch (eager)", "effnet torch (folded, CL)", "effnet onnxruntime",
           "effnet openvino fp32", "effnet openvino int8", "effnet executorch fp32", "effnet executorch int8")
BACKENDS = {"effnet onnxruntime": "onnx", "effnet openvino fp32": "openvino", "effnet openvino int8": "openvino-int8",
            "effnet executorch fp32": "executorch", "effnet executorch int8": "executorch-int8"}


def peak_mib() -> float:
    """This process's peak resident memory (MiB), VmHWM."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def photos() -> list:
    import skimage.data
    from PIL import Image

    names = ("astronaut", "chelsea", "coffee", "rocket", "camera", "cat", "hubble_deep_field", "immunohistochemistry")
    return [Image.fromarray(np.asarray(getattr(skimage.data, n)())).convert("RGB") for n in names]


def calibration_dir(workdir: Path) -> str:
    folder = workdir / "calibration"
    if not folder.exists():
        folder.mkdir(parents=True)
        for i, im in enumerate(photos()):
            im.save(folder / f"{i}.png")
    return str(folder)


def prepare_weights(key: str, workdir: Path) -> None:
    """effdet's random-initialised detector (seeded) with varied BatchNorm statistics, saved in effdet's naming and,
    imported, as an effnet file: every engine (and every peak-RSS child) loads only the one it runs."""
    import effdet

    import effnet
    from effnet.models.zoo.classifier_weights import find_weights
    from effnet.models.zoo.importers import load_weights
    from tests.conftest import randomize_bn

    ours_name, theirs_name, res = MODELS[key]
    torch.manual_seed(0)
    theirs = effdet.create_model(theirs_name, pretrained=False, pretrained_backbone=False).eval()
    randomize_bn(theirs)  # with it, a few hundred (anchor, class) candidates score above 0.05 (Lite0: 256)
    torch.save(theirs.state_dict(), workdir / f"{key}_effdet.pth")
    ours = load_weights(find_weights(ours_name).build(), theirs.state_dict(), source="effdet").eval()
    assert ours.config.resolution == res
    effnet.save(ours, workdir / f"{key}.safetensors")


def build_engines(key: str, workdir: Path, only: str | None = None) -> dict:
    """engine name -> callable(x, scales, valid) for the preprocessed batch."""
    import effnet
    from effnet.detect import Predictor

    want = lambda name: only is None or only == name  # noqa: E731
    engines = {}
    if want(ENGINES[0]):
        import effdet  # only where it runs: a child measuring an effnet engine never loads it

        theirs = effdet.create_model(MODELS[key][1], pretrained=False, pretrained_backbone=False).eval()
        theirs.load_state_dict(torch.load(workdir / f"{key}_effdet.pth", weights_only=True))
        bench = effdet.DetBenchPredict(theirs).eval()
        engines[ENGINES[0]] = lambda x, scales, valid: bench(x, dict(
            img_scale=torch.tensor([1 / s for s in scales]),
            img_size=torch.tensor([[w / s, h / s] for (h, w), s in zip(valid, scales)])))
    if only == ENGINES[0]:
        return engines
    ours = effnet.load(workdir / f"{key}.safetensors").eval()
    if want(ENGINES[1]):
        engines[ENGINES[1]] = Predictor(ours).detect
    if want(ENGINES[2]):
        engines[ENGINES[2]] = Predictor(ours, fold_batchnorm=True).detect
    for name, backend in BACKENDS.items():
        if want(name):
            calib = calibration_dir(workdir) if backend.endswith("int8") else None
            engines[name] = Predictor(ours, backend=backend, calibration=calib).detect
    return engines


def batch_of(key: str, n: int):
    """n letterboxed real photos at the model's input size: (x, scales, valid)."""
    from effnet.detect.predictor import preprocess
    from effnet.models.zoo.classifier_weights import find_weights

    return preprocess(find_weights(MODELS[key][0]).config(), (photos() * 2)[:n])


def child(key: str, engine: str, batch: int, calls: int, workdir: Path) -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    torch.set_flush_denormal(True)
    run = build_engines(key, workdir, engine)[engine]
    args = batch_of(key, batch)
    with torch.inference_mode():
        for _ in range(calls):
            run(*args)
    print(json.dumps({"peak_mib": peak_mib()}))


def peak_rss_child(key: str, engine: str, batch: int, workdir: Path) -> float:
    proc = subprocess.run([sys.executable, __file__, "--child", key, engine, str(batch), "--workdir", str(workdir)],
                          capture_output=True, text=True, env=dict(os.environ), timeout=1800)
    if proc.returncode != 0:
        return float("nan")
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_mib"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--models", default="lite0,d0")
    ap.add_argument("--no-rss", action="store_true")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "bench_detect_infer.json"))
    ap.add_argument("--child", nargs=3)
    ap.add_argument("--workdir")
    args = ap.parse_args()
    if args.child:
        key, engine, batch = args.child
        return child(key, engine, int(batch), 3, Path(args.workdir))

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-detect-"))
    os.environ.setdefault("EFFNET_HOME", str(workdir / "home"))  # exports cached here, reused by the children
    os.environ["BENCH_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    # denormal floats (random weights with varied BatchNorm statistics make many) slow eager PyTorch ~10x on x86;
    # ONNX Runtime and OpenVINO flush them to zero: so does every PyTorch engine here (effdet's too)
    torch.set_flush_denormal(True)
    results = dict(threads=args.threads, reps=args.reps, cpu=_cpu(), torch=torch.__version__,
                   load_average_start=os.getloadavg(), rows=[])
    for key in args.models.split(","):
        t0 = time.perf_counter()
        prepare_weights(key, workdir)
        engines = build_engines(key, workdir)
        print(f"{key}: engines built (exports verified) in {time.perf_counter() - t0:.0f} s", flush=True)
        for batch in map(int, args.batches.split(",")):
            inputs = batch_of(key, batch)
            times = {name: [] for name in engines}
            with torch.inference_mode():
                for name, run in engines.items():  # warm-up
                    run(*inputs)
                for _ in range(args.reps):
                    for name, run in engines.items():
                        t = time.perf_counter()
                        run(*inputs)
                        times[name].append(time.perf_counter() - t)
            load = os.getloadavg()[0]  # the cores are shared: the 1-minute load average as the timings ended
            base = batch / statistics.median(times[ENGINES[0]])
            for name in engines:
                ips = batch / statistics.median(times[name])
                rss = float("nan") if args.no_rss else peak_rss_child(key, name, batch, workdir)
                row = dict(model=MODELS[key][0], resolution=MODELS[key][2], batch=batch, engine=name,
                           images_per_s=round(ips, 2), x_effdet=round(ips / base, 2), peak_rss_mib=round(rss, 1),
                           load_average=round(load, 2))
                results["rows"].append(row)
                print(f"{row['model']:<19} {row['resolution']:4d}px b{batch:<2} {name:<27} {ips:8.2f} img/s "
                      f"{ips / base:5.2f}x effdet  peak RSS {rss:7.1f} MiB  load {load:.1f}", flush=True)
    results["load_average_end"] = os.getloadavg()
    results["machine"] = machine()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.json}")


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


if __name__ == "__main__":
    main()

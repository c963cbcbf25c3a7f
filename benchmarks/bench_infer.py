"""Inference throughput side by side: effnet vs timm vs torchvision vs ONNX Runtime (on a timm export) vs OpenVINO
(fp32, bf16, NNCF int8; on effnet's and on timm's model) vs ExecuTorch + XNNPACK (fp32, PT2E int8; batch-1
programs, larger batches image by image), with the exported files' sizes.

One run of this script measures every engine, interleaving the repetitions (engine A, B, C, A, B, C, ...)
so that the shared machine's noise hits all alike, and reports medians, ratios and peak RSS.

    python benchmarks/bench_infer.py [--model efficientnet_b0] [--batches 1,16] [--reps 10] [--json out.json]
    python benchmarks/bench_infer.py --quick --profile   # ORT + OpenVINO engines only, 3 reps, per-op profile
    python benchmarks/bench_infer.py --roofline          # each layer's time against its own bound (roofline.py)
    python benchmarks/bench_infer.py --goals             # issue 35's engines, goal table, bound each goal needs

Peak RSS is measured per engine in a child process (a process's peak only grows), running the same calls.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# Engines run interleaved on the same 2 cores, and a thread pool that busy-waits after its call slows the next
# engine. ONNX Runtime sessions here never spin; `--passive` also makes PyTorch's OpenMP threads sleep
# (OMP_WAIT_POLICY=PASSIVE, set before torch loads), which is fairer to ONNX Runtime but costs PyTorch ~30%.
if "--passive" in sys.argv:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from effnet.cpu import machine  # noqa: E402
FILE_MIB: dict[str, float] = {}  # engine -> size of the file it runs


def peak_mib() -> float:
    """This process's peak resident memory (MiB) from VmHWM. Not ru_maxrss: Linux carries that across
    fork+exec, so every child of a large parent would report the parent's peak."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def build_engines(model_name: str, resolution: int, workdir: Path, only: str | None = None) -> dict:
    """name -> callable(batch tensor). Built lazily so a child process builds just one."""
    import effnet
    from effnet.deploy import export_model, optimize, ort_run as _ort_run, ort_session as _ort_session

    engines: dict = {}

    def want(name: str) -> bool:
        return only is None or only == name

    ours = effnet.create_model(model_name).eval()
    if want("effnet eager (folded, CL)"):
        m = optimize(ours)
        engines["effnet eager (folded, CL)"] = lambda x: m(x.contiguous(memory_format=torch.channels_last))
    if want("effnet bf16 (folded, CL)"):
        mb = optimize(ours)

        def run_bf16(x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return mb(x.contiguous(memory_format=torch.channels_last))

        engines["effnet bf16 (folded, CL)"] = run_bf16
    if want("effnet compiled fp32"):
        from effnet.deploy import compile_for_inference

        engines["effnet compiled fp32"] = compile_for_inference(ours)
    if want("effnet compiled bf16"):
        from effnet.deploy import compile_for_inference

        engines["effnet compiled bf16"] = compile_for_inference(ours, bf16=True)
    if want("effnet onnxruntime fp32"):
        path = workdir / "effnet.onnx"
        if not path.exists():
            export_model(ours, path, batch="dynamic")
        s = _ort_session(str(path), spinning=False)
        engines["effnet onnxruntime fp32"] = lambda x: _ort_run(s, x, True)
        FILE_MIB["effnet onnxruntime fp32"] = path.stat().st_size / 2**20
    if want("effnet onnxruntime int8"):
        path = workdir / "effnet_int8.onnx"
        if not path.exists():
            export_model(ours, path, batch="dynamic", int8=True, calibration=str(calibration_photos(workdir)))
        s8 = _ort_session(str(path), spinning=False)
        engines["effnet onnxruntime int8"] = lambda x: _ort_run(s8, x, True)
        FILE_MIB["effnet onnxruntime int8"] = path.stat().st_size / 2**20
    engines.update(openvino_engines("effnet", ours, resolution, workdir, want))
    engines.update(executorch_engines(ours, workdir, want))
    try:
        import timm
    except ImportError:
        timm = None
    if timm is not None and model_name.startswith("efficientnet_b"):
        if want("timm eager"):
            t = timm.create_model(model_name).eval()
            engines["timm eager"] = t
        if want("timm CL + bf16"):
            tc = timm.create_model(model_name).eval().to(memory_format=torch.channels_last)

            def run_timm_bf16(x):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return tc(x.contiguous(memory_format=torch.channels_last))

            engines["timm CL + bf16"] = run_timm_bf16
        if want("onnxruntime on timm export"):
            path = workdir / "timm.onnx"
            if not path.exists():
                import warnings

                t = timm.create_model(model_name).eval()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(t, (torch.zeros(1, 3, resolution, resolution),), str(path), dynamo=False,
                                      opset_version=17, input_names=["input"], output_names=["logits"],
                                      dynamic_axes={"input": {0: "b"}, "logits": {0: "b"}})
            st = _ort_session(str(path), spinning=False)
            engines["onnxruntime on timm export"] = lambda x: _ort_run(st, x, True)
            FILE_MIB["onnxruntime on timm export"] = path.stat().st_size / 2**20
        engines.update(openvino_engines("timm", timm.create_model(model_name).eval(), resolution, workdir, want))
    if want("torchvision eager") and model_name in {f"efficientnet_b{i}" for i in range(8)}:
        import torchvision

        tv = getattr(torchvision.models, model_name)(weights=None).eval()
        engines["torchvision eager"] = tv
    return engines


def executorch_engines(model, workdir: Path, want) -> dict:
    """effnet's model as ExecuTorch programs (XNNPACK; fp32, and int8 by PT2E calibrated on real photos)."""
    import importlib.util

    from effnet.deploy import export_model
    from effnet.deploy.executorch import PteRunner

    engines: dict = {}
    if importlib.util.find_spec("executorch") is None:
        return engines
    for int8 in (False, True):
        name = f"effnet executorch {'int8' if int8 else 'fp32'}"
        if not want(name):
            continue
        path = workdir / f"effnet{'_int8' if int8 else ''}.pte"
        if not path.exists():
            export_model(model, path, "executorch", int8=int8,
                         calibration=str(calibration_photos(workdir)) if int8 else None)
        engines[name] = PteRunner(path)
        FILE_MIB[name] = path.stat().st_size / 2**20
    return engines


def calibration_photos(workdir: Path) -> Path:
    photos = workdir / "photos"
    if not photos.exists():
        from effnet.data.bundled import write_photos

        write_photos(photos, count=64)
    return photos


def openvino_engines(lib: str, model, resolution: int, workdir: Path, want) -> dict:
    """OpenVINO fp32 / bf16 / int8 (NNCF, 64 calibration photo views) on ``lib``'s model, when installed.

    effnet's go through ``effnet export --format openvino`` (BN folded, verified); timm's model is converted as a
    user would (``ov.convert_model`` on the eval model) and quantized by the same NNCF call.
    """
    try:
        import openvino  # noqa: F401
    except ImportError:
        return {}
    from effnet.deploy import export_model
    from effnet.deploy import openvino as ovino
    from effnet.deploy.export import real_batch

    names = {p: f"{lib} openvino {p}" for p in ("fp32", "bf16", "int8")}

    def wanted(name: str) -> bool:  # the engine, or the same IR through effnet's Runner (timm rows)
        return want(name) or want(f"{name} +runner")

    if not any(wanted(n) for n in names.values()):
        return {}
    fp32, int8 = workdir / f"{lib}_ov.xml", workdir / f"{lib}_ov_int8.xml"
    if lib == "effnet":
        if not fp32.exists():
            export_model(model, fp32, "openvino", batch="dynamic")
        if wanted(names["int8"]) and not int8.exists():
            export_model(model, int8, "openvino", batch="dynamic", int8=True,
                         calibration=str(calibration_photos(workdir)))
    else:
        import effnet

        ov_model = ovino.convert(model.eval(), torch.zeros(1, 3, resolution, resolution))
        if not fp32.exists():
            ovino.save_ir(ov_model, fp32)
        if wanted(names["int8"]) and not int8.exists():
            config = effnet.create_model("efficientnet_b0").config.replace(resolution=resolution)
            real, _ = real_batch(config, str(calibration_photos(workdir)))
            ovino.save_ir(ovino.quantize_int8(ov_model, real), int8)
    threads = torch.get_num_threads()
    engines = {}
    for precision, path in (("fp32", fp32), ("bf16", fp32), ("int8", int8)):
        hint = "bf16" if precision == "bf16" else "fp32"
        if lib == "effnet" and want(names[precision]):  # effnet's backend: static shapes, chunks across streams
            engines[names[precision]] = ovino.Runner(path, hint, threads)
            FILE_MIB[names[precision]] = (Path(path).stat().st_size + ovino.bin_path(path).stat().st_size) / 2**20
        if lib == "timm" and want(names[precision]):  # as a timm user runs it: one compiled model, dynamic batch
            compiled = ovino.compile_ir(path, hint, threads)
            engines[names[precision]] = lambda x, c=compiled: ovino.ov_run(c, x)
        if lib == "timm" and want(f"{names[precision]} +runner"):  # the same IR through effnet's Runner
            engines[f"{names[precision]} +runner"] = ovino.Runner(path, hint, threads)
    return engines


def peak_rss_child(model: str, resolution: int, workdir: Path, engine: str, batch: int, calls: int) -> float:
    """Peak RSS (MiB) of a fresh process that builds one engine and runs it ``calls`` times."""
    code = (
        "import sys, torch; sys.path.insert(0, %r); from benchmarks.bench_infer import build_engines, peak_mib;"
        "from pathlib import Path; torch.set_num_threads(%d);"
        "e = build_engines(%r, %d, Path(%r), only=%r)[%r]; x = torch.randn(%d, 3, %d, %d)\n"
        "with torch.inference_mode():\n    [e(x) for _ in range(%d)]\n"
        "print(peak_mib())"
    ) % (str(ROOT), torch.get_num_threads(), model, resolution, str(workdir), engine, engine, batch, resolution,
         resolution, calls)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return float("nan")


def profile_ops(workdir: Path, resolution: int, batch: int, threads: int, top: int = 8) -> None:
    """Where the time goes: self time per op type, OpenVINO (PERF_COUNT) and ONNX Runtime (its profiler)."""
    import collections

    import openvino as ov
    import onnxruntime as ort

    x = torch.randn(batch, 3, resolution, resolution).numpy()
    for label, xml in (("effnet openvino fp32", "effnet_ov.xml"), ("timm openvino fp32", "timm_ov.xml"),
                       ("effnet openvino int8", "effnet_ov_int8.xml"), ("timm openvino int8", "timm_ov_int8.xml")):
        if not (workdir / xml).exists():
            continue
        compiled = ov.Core().compile_model(str(workdir / xml), "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
            "PERF_COUNT": True})
        req = compiled.create_infer_request()
        req.infer({0: x})
        per = collections.Counter()
        for _ in range(3):
            req.infer({0: x})
            for info in req.profiling_info:
                per[f"{info.node_type} [{info.exec_type}]"] += info.real_time.total_seconds() * 1e3 / 3
        _print_profile(label, per, top)
    for label, onnx_file in (("effnet onnxruntime fp32", "effnet.onnx"), ("onnxruntime on timm export", "timm.onnx")):
        if not (workdir / onnx_file).exists():
            continue
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.enable_profiling = True
        opts.profile_file_prefix = str(workdir / "ort_profile")
        sess = ort.InferenceSession(str(workdir / onnx_file), opts, providers=["CPUExecutionProvider"])
        for _ in range(4):
            sess.run(None, {sess.get_inputs()[0].name: x})
        per = collections.Counter()
        for event in json.loads(Path(sess.end_profiling()).read_text()):
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                per[event["args"]["op_name"]] += event["dur"] / 1e3 / 4
        _print_profile(label, per, top)


def _print_profile(label: str, per, top: int) -> None:
    total = sum(per.values())
    rows = ", ".join(f"{name} {ms / total:.0%}" for name, ms in per.most_common(top))
    print(f"profile {label}: {total:.0f} ms/call: {rows}")


def goal_rows(args, workdir: Path, resolution: int, results: list[dict]) -> dict:
    """The goal table (benchmarks/goals.py) after the timed run: this machine's roofs measured now (the int8 matrix
    roof), raised where a layer of effnet's OpenVINO or ONNX Runtime engines beat them (their per-layer profiles, as
    ``--roofline`` does, 5 calls each); the network's bound per image at each precision and batch against those
    (how much of it each target needs); the model's GOP per image; and the low-precision engines' top-1 agreement
    with fp32 on real photos."""
    import effnet
    from benchmarks import roofline
    from benchmarks.goals import gops_per_image, inference_goals, low_precision_agreement, table

    model = effnet.create_model(args.model).eval()
    network = roofline.count_layers(model)
    batches = sorted({r["batch"] for r in results})
    engines = roofline.chosen_engines("openvino,onnxruntime")
    roofline.build_files(args.model, resolution, workdir, engines)
    roofs, runs = roofline.profiled_runs(engines, model, network, batches, args.threads, 5, workdir,
                                         roofline.measure_roofs(args.threads))
    print(f"int8 matrix roof: {roofs.matrix['int8']:.0f} GOP/s ({roofs.sources['int8']})")
    bounds = roofline.network_bounds(network, roofs, batches)
    print("the network's bound per image: " + ", ".join(f"{p} b{b} {us / 1e3:.2f} ms" for (p, b), us in bounds.items()))
    print("whole-network fraction, profiled: " + ", ".join(f"{r.engine} b{r.batch} {r.fraction:.2f}" for r in runs))
    agreement = low_precision_agreement(workdir, args.threads)
    goals = inference_goals(results, roofs.matrix["int8"], gops_per_image(model, resolution), agreement, bounds)
    print(table(goals, machine()))
    return dict(goals=[g.row() for g in goals], agreement=agreement, int8_roof_gops=roofs.matrix["int8"],
                int8_roof_source=roofs.sources["int8"], roofs=dict(matrix=roofs.matrix, sources=roofs.sources,
                activation_gelems_per_s=roofs.activation, dram_gb_per_s=roofs.dram, notes=roofs.notes),
                bound_us_per_image={f"{p} b{b}": us for (p, b), us in bounds.items()},
                profiled_fraction={f"{r.engine} b{r.batch}": r.fraction for r in runs})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientnet_b0")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--passive", action="store_true", help="OMP_WAIT_POLICY=PASSIVE for PyTorch's threads")
    ap.add_argument("--json", default="bench-out/bench_infer.json")
    ap.add_argument("--quick", action="store_true", help="3 repetitions, no eager PyTorch engines (minutes, not tens)")
    ap.add_argument("--engines", help="comma-separated substrings: only engines whose name contains one")
    ap.add_argument("--profile", action="store_true", help="also print time per op type (OpenVINO, ONNX Runtime)")
    ap.add_argument("--goals", action="store_true", help="only the engines the speed goals compare (benchmarks/goals.py), "
                    "the int8 matrix roof, low-precision agreement on photos, and the goal table")
    ap.add_argument("--roofline", action="store_true", help="instead: this machine's roofs, and each layer's time in "
                    "OpenVINO, ONNX Runtime and torch against its own bound (benchmarks/roofline.py)")
    ap.add_argument("--roofline-json", help="default: benchmarks/results/roofline_<model>.json")
    ap.add_argument("--roofline-png", help="default: the JSON's path with .png")
    ap.add_argument("--roofline-workdir", help="exports are read from (and written to when missing) this folder")
    args = ap.parse_args()
    if args.quick:
        args.reps = min(args.reps, 3)
    torch.set_num_threads(args.threads)
    if args.roofline:
        from benchmarks.roofline import main as roofline

        return roofline(args)
    import effnet

    resolution = effnet.create_model(args.model).config.resolution
    workdir = Path(tempfile.mkdtemp(prefix="effnet-bench-"))
    engines = build_engines(args.model, resolution, workdir)
    if args.goals:
        from benchmarks.goals import ENGINES

        args.engines = ",".join(ENGINES)
    keep = args.engines.split(",") if args.engines else None
    slow = ("eager", "timm CL + bf16", "effnet bf16 (folded", "compiled")  # PyTorch: measured last round
    engines = {n: f for n, f in engines.items() if (keep is None or any(k in n for k in keep))
               and not (args.quick and keep is None and any(k in n for k in slow))}
    if args.profile:
        profile_ops(workdir, resolution, max(int(b) for b in args.batches.split(",")), args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    results = []
    for batch in batches:
        x = torch.randn(batch, 3, resolution, resolution)
        times: dict[str, list[float]] = {name: [] for name in engines}
        with torch.inference_mode():
            for fn in engines.values():  # warm-up
                fn(x)
                fn(x)
            for _ in range(args.reps):
                for name, fn in engines.items():
                    t = time.perf_counter()
                    fn(x)
                    times[name].append(time.perf_counter() - t)
        for name, ts in times.items():
            med = statistics.median(ts)
            results.append(dict(engine=name, batch=batch, median_s=med, img_per_s=batch / med,
                                file_mib=FILE_MIB.get(name)))
    if not args.no_memory:
        for r in results:
            if r["batch"] == max(batches):
                r["peak_rss_mib"] = peak_rss_child(args.model, resolution, workdir, r["engine"], r["batch"], 3)
    ref_name = "onnxruntime on timm export"
    print(f"{args.model} @ {resolution}px, {args.threads} threads, medians of {args.reps} interleaved repetitions"
          f"{', OMP passive' if args.passive else ''}")
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    print(f"{'engine':<30} {'batch':>5} {'img/s':>8} {'x ORT-timm':>10} {'x timm OV int8':>14} {'x timm':>7} "
          f"{'x timm CL+bf16':>14} {'peak RSS MiB':>12} {'file MiB':>8}")
    for r in results:
        same = {o["engine"]: o["img_per_s"] for o in results if o["batch"] == r["batch"]}

        def ratio(name: str) -> str:
            return f"{r['img_per_s'] / same[name]:.2f}" if name in same else "-"

        rss = f"{r['peak_rss_mib']:.0f}" if "peak_rss_mib" in r else ""
        size = f"{r['file_mib']:.1f}" if r.get("file_mib") else ""
        print(f"{r['engine']:<30} {r['batch']:>5} {r['img_per_s']:>8.1f} {ratio(ref_name):>10} "
              f"{ratio('timm openvino int8'):>14} {ratio('timm eager'):>7} "
              f"{ratio('timm CL + bf16'):>14} {rss:>12} {size:>8}")
    from effnet.deploy.choice import choose, describe

    picks = {b: describe(choose(b)) for b in ("auto", "openvino-bf16", "openvino-int8", "onnx-int8")}
    print("effnet's choices on this CPU: " + "; ".join(picks.values()))
    goals = goal_rows(args, workdir, resolution, results) if args.goals else {}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(machine=machine(), model=args.model, resolution=resolution, threads=args.threads,
                                   reps=args.reps, omp_passive=args.passive, load_average=load, choices=picks,
                                   results=results, **goals), indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Load test of `effnet serve`: 32 concurrent clients on loopback, dynamic batching vs `--max-batch 1`.

Starts two real servers (the `effnet serve` command, same model and backend, one with `--max-batch 16`, one
with `--max-batch 1`), then alternates measuring rounds between them (A, B, A, B, ...) so that the shared
machine's noise hits both alike. In a round every client sends its requests one after another (closed loop);
every answer is checked against in-process prediction with the same model and backend (top-5 classes and
probabilities), so a fast wrong answer cannot count. Prints a table and writes JSON.

    python benchmarks/bench_serve.py                # 32 clients x 8 requests x 3 rounds per server
    python benchmarks/bench_serve.py --quick        # 32 clients x 2 requests x 1 round
    python benchmarks/bench_serve.py --model efficientnet_lite0 --backend onnx --clients 32 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "coins", "immunohistochemistry", "colorwheel")


def photo_uploads(folder: Path) -> list[Path]:
    """Real photos from scikit-image as JPEG files (what clients typically upload)."""
    import skimage.data
    from PIL import Image

    paths = []
    for name in PHOTOS:
        path = folder / f"{name}.jpg"
        Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB").save(path, quality=90)
        paths.append(path)
    return paths


def expected_answers(model_name: str, backend: str, paths: list[Path]) -> tuple[list[dict[str, float]], dict]:
    """label -> probability (top-5) for each image, computed in this process with the same backend; and the
    model alone at batch 16 vs batch 1 (img/s): the most that batching can gain before any HTTP work."""
    import torch

    from effnet.data import eval_transform, load_image
    from effnet.deploy import with_backend
    from effnet.models.registry import create_model
    from effnet.predict.classify import predict_files

    model = with_backend(create_model(model_name, pretrained=True), backend)
    results, errors = predict_files(model, paths, topk=5)
    assert not errors, errors
    transform = eval_transform(model.config)
    x = torch.stack([transform(load_image(p)) for p in paths] * 2)[:16]
    speed = {}
    with torch.inference_mode():
        model(x), model(x[:1])  # warm-up
        for _ in range(3):  # interleaved, best of 3 (the machine is shared)
            for batch in (16, 1):
                start = time.perf_counter()
                for i in range(0, 32, batch):
                    model(x[i % 16:i % 16 + batch])
                speed[batch] = max(speed.get(batch, 0.0), 32 / (time.perf_counter() - start))
    return [dict(r.top) for r in results], {"batch16_img_per_s": round(speed[16], 1),
                                            "batch1_img_per_s": round(speed[1], 1)}


def start_server(model_name: str, backend: str, max_batch: int, max_wait_ms: float, log: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "effnet.cli", "serve", "--model", model_name, "--pretrained", "--backend",
           backend, "--port", str(port), "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms),
           "--no-access-log"]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc, base: str, log: Path, timeout: float = 600) -> dict:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited {proc.returncode}:\n{log.read_text()}")
        try:
            return httpx.get(f"{base}/health", timeout=5).raise_for_status().json()
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit(f"server not ready after {timeout} s:\n{log.read_text()}")


def check(answer: dict, expected: dict[str, float]) -> bool:
    got = {p["label"]: p["score"] for p in answer["predictions"]}
    return set(got) == set(expected) and all(abs(got[k] - v) <= 1e-3 for k, v in expected.items())


async def one_round(base: str, uploads: list[bytes], expected: list[dict], clients: int, per_client: int):
    """Every client sends ``per_client`` requests in turn; returns (latencies s, wall s, wrong answers)."""
    import httpx

    latencies: list[float] = []
    wrong: list[str] = []

    async def client(c: int, http: httpx.AsyncClient) -> None:
        for r in range(per_client):
            i = (c * per_client + r) % len(uploads)
            start = time.perf_counter()
            response = await http.post(f"{base}/predict", files={"file": (f"{PHOTOS[i]}.jpg", uploads[i])})
            latencies.append(time.perf_counter() - start)
            if response.status_code != 200 or not check(response.json(), expected[i]):
                wrong.append(f"{PHOTOS[i]}: {response.status_code} {response.text[:200]}")

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*[client(c, http) for c in range(clients)])
        return latencies, time.perf_counter() - start, wrong


def summarize(name: str, latencies: list[float], wall: float, stats0: dict, stats1: dict) -> dict:
    ms = np.asarray(latencies) * 1000
    batches = stats1["batches"] - stats0["batches"]
    return dict(server=name, requests=len(latencies), wall_s=round(wall, 2),
                req_per_s=round(len(latencies) / wall, 2), p50_ms=round(float(np.percentile(ms, 50)), 1),
                p99_ms=round(float(np.percentile(ms, 99)), 1),
                mean_batch=round((stats1["requests"] - stats0["requests"]) / max(1, batches), 2))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="efficientnet_lite0", help="a model with installed pretrained weights")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests-per-client", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--quick", action="store_true", help="2 requests per client, 1 round")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "bench_serve.json"))
    args = ap.parse_args()
    if args.quick:
        args.requests_per_client, args.rounds = 2, 1
    import httpx

    with tempfile.TemporaryDirectory() as tmp:
        paths = photo_uploads(Path(tmp))
        uploads = [p.read_bytes() for p in paths]
        expected, model_only = expected_answers(args.model, args.backend, paths)
        configs = {f"batched (--max-batch {args.max_batch})": args.max_batch, "unbatched (--max-batch 1)": 1}
        servers = {name: start_server(args.model, args.backend, mb, args.max_wait_ms, Path(tmp) / f"{mb}.log")
                   for name, mb in configs.items()}
        try:
            health = {name: wait_ready(proc, base, Path(tmp) / f"{configs[name]}.log")
                      for name, (proc, base) in servers.items()}
            for _, base in servers.values():  # warm-up: first calls allocate and (ONNX) plan
                asyncio.run(one_round(base, uploads, expected, 8, 1))
            pooled = {name: ([], 0.0, [], None) for name in servers}
            for _ in range(args.rounds):
                for name, (_, base) in servers.items():
                    before = httpx.get(f"{base}/health").json()["stats"]
                    lat, wall, wrong = asyncio.run(one_round(base, uploads, expected, args.clients,
                                                             args.requests_per_client))
                    lats, walls, wrongs, first = pooled[name]
                    pooled[name] = (lats + lat, walls + wall, wrongs + wrong, first or before)
            rows = []
            for name, (_, base) in servers.items():
                lats, wall, wrong, before = pooled[name]
                row = summarize(name, lats, wall, before, httpx.get(f"{base}/health").json()["stats"])
                row["wrong_answers"] = len(wrong)
                rows.append(row)
                for w in wrong[:5]:
                    print(f"WRONG ({name}): {w}", file=sys.stderr)
        finally:
            for proc, _ in servers.values():
                proc.send_signal(signal.SIGTERM)
            for proc, _ in servers.values():
                proc.wait(timeout=120)
    speedup = rows[0]["req_per_s"] / rows[1]["req_per_s"]
    print(f"effnet serve, {args.model} backend {health[rows[0]['server']]['backend']}, {args.clients} concurrent "
          f"clients x {args.requests_per_client} requests x {args.rounds} rounds, loopback, {os.cpu_count()} CPUs")
    header = f"{'server':<28} {'requests':>8} {'wrong':>5} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'mean batch':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['server']:<28} {r['requests']:>8} {r['wrong_answers']:>5} {r['req_per_s']:>7.1f} "
              f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['mean_batch']:>10.2f}")
    print(f"throughput, batched / unbatched: {speedup:.2f}x (goal >= 1.5x)")
    print(f"the model alone, in this process: batch 16 {model_only['batch16_img_per_s']} img/s, batch 1 "
          f"{model_only['batch1_img_per_s']} img/s "
          f"({model_only['batch16_img_per_s'] / model_only['batch1_img_per_s']:.2f}x: the ceiling for batching)")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(model=args.model, backend=health[rows[0]["server"]]["backend"],
                                   clients=args.clients, requests_per_client=args.requests_per_client,
                                   rounds=args.rounds, max_wait_ms=args.max_wait_ms, cpus=os.cpu_count(),
                                   date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                   throughput_ratio=round(speedup, 2), model_only=model_only, results=rows), indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if all(r["wrong_answers"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

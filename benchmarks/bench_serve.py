"""Load test of `effnet serve`: 32 concurrent clients on loopback, dynamic batching vs `--max-batch 1`, the Open
Inference Protocol route beside `/predict`, and an overload round (256 clients against the default limits).

Starts real servers (the `effnet serve` command, same model, backend and engine threads; only `--max-batch`
differs; `--also-one-engine` adds the previous default's pair, one engine with every core), then alternates measuring rounds between them (A, B, A, B, ...) so that the shared machine's noise
hits both alike. In a round every client sends its requests one after another (closed loop); every answer is
checked against in-process prediction with the same model and backend (top-5 classes and probabilities), so a
fast wrong answer cannot count.

The protocol row sends the same photos to `POST /v2/models/{name}/infer` of the batched server as Triton's
client does by default (BYTES input as binary data) and checks its top-5 labels and scores; its rounds alternate
with `/predict`'s. The overload row sends `--overload-clients` (256) clients at the batched server with its
default limits (`--max-queue`, `--max-concurrency`): requests/s of the accepted (200) answers, p50/p99 of their
latency, the share answered 503 (each client sends its next request at once, ignoring Retry-After: the
worst case), and the server's peak RSS over the round (VmHWM, reset before it).

The load generator runs in its own process (a lean keep-alive HTTP/1.1 client on asyncio streams, not httpx:
httpx cost ~1-2 ms of CPU per request, taken from the 2 cores the server is measured on); its CPU share is
reported. Besides requests/s and latency, the server's own CPU time per request is read from /proc: on a
shared machine it is the steadier number (capacity on idle cores = cores / CPU time per request). The model
alone is timed at batch 1..16 with 1 and 2 threads for torch, ONNX Runtime and OpenVINO: the ceiling for what
batching can gain before any HTTP work. Prints tables and writes JSON.

    python benchmarks/bench_serve.py                # 32 clients x 8 requests x 3 rounds per server
    python benchmarks/bench_serve.py --quick        # 32 clients x 2 requests x 1 round
    python benchmarks/bench_serve.py --backend openvino --also-one-engine
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
from effnet.cpu import machine  # noqa: E402
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "coins", "immunohistochemistry", "colorwheel")
BOUNDARY = "effnet-bench-boundary-5e1c"


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


def expected_answers(model_name: str, backend: str, paths: list[Path]) -> list[dict[str, float]]:
    """label -> probability (top-5) for each image, computed in this process with the same backend."""
    from effnet.deploy import with_backend
    from effnet.models.zoo.registry import create_model
    from effnet.classify.predict import predict_files

    results, errors = predict_files(with_backend(create_model(model_name, pretrained=True), backend), paths, topk=5)
    assert not errors, errors
    return [{p["label"]: p["score"] for p in r["predictions"]} for r in results]


def model_ceiling(model_name: str, backends: list[str], paths: list[Path]) -> list[dict]:
    """The model alone, images/s at batch 1..16 with 1 and 2 threads per engine backend (interleaved, best of 3,
    the machine is shared): the most that batching can gain before any HTTP work."""
    import torch

    from effnet.data import eval_transform, load_image
    from effnet.deploy import with_backend
    from effnet.models.zoo.registry import create_model

    base = create_model(model_name, pretrained=True)
    transform = eval_transform(base.config)
    x = torch.stack([transform(load_image(p)) for p in paths] * 2)
    engines = {}
    for backend in backends:
        for threads in (1, 2):
            engine = with_backend(base, backend, threads=None if backend == "torch" else threads)
            engines[(backend, threads)] = engine
    sizes, speed = (1, 2, 4, 8, 16), {}
    with torch.inference_mode():
        for _ in range(3):
            for (backend, threads), engine in engines.items():
                torch.set_num_threads(threads)
                for batch in sizes:
                    engine(x[:batch])  # warm-up / best of 3
                    start = time.perf_counter()
                    for i in range(0, 32, batch):
                        engine(x[i % 16:i % 16 + batch])
                    key = (backend, threads, batch)
                    speed[key] = max(speed.get(key, 0.0), 32 / (time.perf_counter() - start))
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for backend, threads in engines:
        img_s = {b: round(speed[(backend, threads, b)], 1) for b in sizes}
        rows.append(dict(backend=backend, threads=threads, resolution=base.config.resolution, img_per_s=img_s,
                         best_over_batch1=round(max(img_s.values()) / img_s[1], 2),
                         batch16_over_batch1=round(img_s[16] / img_s[1], 2)))
    return rows


def start_server(model_name: str, backend: str, max_batch: int, max_wait_ms: float, log: Path, extra=()):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "effnet.cli", "serve", "--model", model_name, "--pretrained", "--backend",
           backend, "--port", str(port), "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms),
           "--no-access-log", *extra]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    return proc, port


def get_json(port: int, path: str, timeout: float = 5) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return json.loads(r.read())


def wait_ready(proc, port: int, log: Path, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited {proc.returncode}:\n{log.read_text()}")
        try:
            return get_json(port, "/health")
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"server not ready after {timeout} s:\n{log.read_text()}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def check(answer: dict, expected: dict[str, float]) -> bool:
    """/predict answers {"results": [{"predictions": [{"label", "score"}]}]}; the protocol route top_labels and
    top_scores outputs (JSON tensors)."""
    if "results" in answer:
        got = {p["label"]: p["score"] for p in answer["results"][0]["predictions"]}
    else:
        outputs = {o["name"]: o["data"] for o in answer["outputs"]}
        got = dict(zip(outputs["top_labels"], outputs["top_scores"]))
    return set(got) == set(expected) and all(abs(got[k] - v) <= 1e-3 for k, v in expected.items())


# ------------------------------------------------------------------ the load generator (its own process)

def request_bytes(name: str, data: bytes) -> bytes:
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    return (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}"
            f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def protocol_request_bytes(model: str, data: bytes) -> bytes:
    """POST /v2/models/MODEL/infer as tritonclient.http sends it: the JSON part, then the image as a binary BYTES
    element (4-byte length + bytes); top-5 labels and scores asked for as JSON tensors."""
    head = json.dumps({"inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(data) + 4}}],
                       "outputs": [{"name": "top_labels"}, {"name": "top_scores"}], "parameters": {"topk": 5}})
    body = head.encode() + len(data).to_bytes(4, "little") + data
    return (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nInference-Header-Content-Length: "
            f"{len(head)}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


async def _client(port: int, order: list[int], requests: list[bytes], expected, latencies, wrong, busy,
                  accept_busy: bool) -> None:
    """One keep-alive connection sending its requests one after another. A 503 (``accept_busy``: the overload
    round) is counted in ``busy``, not timed, and the next request goes out at once."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in order:
            start = time.perf_counter()
            writer.write(requests[i])
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            body = await reader.readexactly(length)
            if accept_busy and head.startswith(b"HTTP/1.1 503"):
                busy.append(time.perf_counter() - start)
                continue
            latencies.append(time.perf_counter() - start)
            if not head.startswith(b"HTTP/1.1 200") or not check(json.loads(body), expected[i]):
                status = head.split(b"\r\n")[0].decode()
                wrong.append(f"{PHOTOS[i]}: {status} {body[:200].decode(errors='replace')}")
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        wrong.append(f"connection: {exc!r}")
    finally:
        writer.close()


async def _load(port: int, requests, expected, clients: int, per_client: int, accept_busy: bool = False):
    latencies: list[float] = []
    wrong: list[str] = []
    busy: list[float] = []
    orders = [[(c * per_client + r) % len(requests) for r in range(per_client)] for c in range(clients)]
    cpu0, start = time.process_time(), time.perf_counter()
    await asyncio.gather(*[_client(port, o, requests, expected, latencies, wrong, busy, accept_busy)
                           for o in orders])
    wall = time.perf_counter() - start
    return dict(latencies=latencies, wall=wall, wrong=wrong, busy=len(busy), client_cpu=time.process_time() - cpu0)


def load_generator_main(spec_path: str) -> int:
    """``bench_serve.py --load-generator SPEC.json``: one round against one server, result JSON on stdout."""
    spec = json.loads(Path(spec_path).read_text())
    uploads = [Path(p).read_bytes() for p in spec["uploads"]]
    if spec.get("route") == "v2":
        requests = [protocol_request_bytes(spec["model"], data) for data in uploads]
    else:
        requests = [request_bytes(PHOTOS[i], data) for i, data in enumerate(uploads)]
    result = asyncio.run(_load(spec["port"], requests, spec["expected"], spec["clients"], spec["per_client"],
                               spec.get("accept_busy", False)))
    print(json.dumps(result))
    return 0


def peak_rss_mb(pid: int, reset: bool = False) -> float:
    """The process's peak RSS (VmHWM) in MB; ``reset``: start it again from the current RSS (clear_refs 5)."""
    if reset:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def one_round(port: int, pid: int, spec: dict, tmp: Path) -> dict:
    """A round in a separate load-generator process; adds the server's CPU seconds, batching counters and peak
    RSS over the round."""
    path = tmp / f"spec-{port}.json"
    path.write_text(json.dumps(dict(spec, port=port)))
    before, stats0, rss0 = cpu_seconds(pid), get_json(port, "/health")["stats"], peak_rss_mb(pid, reset=True)
    out = subprocess.run([sys.executable, __file__, "--load-generator", str(path)], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    result = json.loads(out.stdout)
    result["server_cpu"] = cpu_seconds(pid) - before  # includes ~0.2 s of the generator's start: negligible
    stats1 = get_json(port, "/health")["stats"]
    result["batched"] = stats1["requests"] - stats0["requests"]
    result["batches"] = stats1["batches"] - stats0["batches"]
    result["peak_rss_mb"] = peak_rss_mb(pid)
    result["rss_before_mb"] = rss0
    return result


def summarize(name: str, rounds: list[dict], cpus: int) -> dict:
    latencies = [t for r in rounds for t in r["latencies"]]
    wall, n = sum(r["wall"] for r in rounds), len(latencies)
    server_cpu, client_cpu = sum(r["server_cpu"] for r in rounds), sum(r["client_cpu"] for r in rounds)
    ms = np.asarray(latencies) * 1000
    batches = sum(r["batches"] for r in rounds)
    return dict(server=name, requests=n, wrong_answers=sum(len(r["wrong"]) for r in rounds), wall_s=round(wall, 2),
                req_per_s=round(n / wall, 2), p50_ms=round(float(np.percentile(ms, 50)), 1),
                p99_ms=round(float(np.percentile(ms, 99)), 1),
                mean_batch=round(sum(r["batched"] for r in rounds) / max(1, batches), 2),
                server_cpu_ms_per_request=round(server_cpu / n * 1000, 2),
                server_cores_busy=round(server_cpu / wall, 2),
                capacity_req_per_s_on_idle_cores=round(cpus * n / server_cpu, 1),
                load_generator_cpu_share=round(client_cpu / wall, 3))


def loadavg() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def measure(args, servers: dict, spec: dict, tmp: Path) -> list[dict]:
    """Warm-up, then ``args.rounds`` rounds per server, interleaved, and as many on the batched server's protocol
    route; one summary row each."""
    for proc, port in servers.values():  # first calls allocate and (ONNX / OpenVINO) plan
        one_round(port, proc.pid, dict(spec, clients=8, per_client=2), tmp)
    batched = next(iter(servers))
    entries = {name: (proc, port, spec) for name, (proc, port) in servers.items()}
    entries = {batched: entries.pop(batched), f"{batched}, POST /v2/models/{args.model}/infer": (
        *servers[batched], dict(spec, route="v2", model=args.model)), **entries}
    rounds = {name: [] for name in entries}
    for _ in range(args.rounds):
        for name, (proc, port, spec_) in entries.items():
            rounds[name].append(one_round(port, proc.pid, spec_, tmp))
    rows = []
    for name in entries:
        rows.append(summarize(name, rounds[name], os.cpu_count()))
        for w in [w for r in rounds[name] for w in r["wrong"]][:5]:
            print(f"WRONG ({name}): {w}", file=sys.stderr)
    return rows


def overload(args, servers: dict, spec: dict, tmp: Path, health: dict) -> dict:
    """``args.overload_clients`` clients x ``args.overload_requests`` requests at the batched server."""
    name = next(iter(servers))
    proc, port = servers[name]
    r = one_round(port, proc.pid, dict(spec, clients=args.overload_clients, per_client=args.overload_requests,
                                       accept_busy=True), tmp)
    ms = np.asarray(r["latencies"]) * 1000
    sent = len(r["latencies"]) + r["busy"]
    return dict(server=f"{name}, {args.overload_clients} clients", clients=args.overload_clients, sent=sent,
                accepted=len(r["latencies"]), wrong_answers=len(r["wrong"]), wall_s=round(r["wall"], 2),
                accepted_req_per_s=round(len(r["latencies"]) / r["wall"], 2),
                p50_ms=round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
                p99_ms=round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
                share_503=round(r["busy"] / max(1, sent), 3), peak_rss_mb=round(r["peak_rss_mb"], 1),
                rss_before_mb=round(r["rss_before_mb"], 1), max_queue=health[name]["max_queue"],
                max_concurrency=health[name]["max_concurrency"], wrong=r["wrong"][:5])


def print_tables(args, backend: str, rows: list[dict], ceiling: list[dict], load: dict, threads,
                 over: dict) -> None:
    print(f"effnet serve, {args.model} backend {backend}, {args.clients} concurrent clients x "
          f"{args.requests_per_client} requests x {args.rounds} rounds, loopback, {os.cpu_count()} CPUs, "
          f"load average before {load['before'][0]} after {load['after'][0]}")
    header = (f"{'server':<62} {'wrong':>5} {'req/s':>6} {'p50 ms':>7} {'p99 ms':>7} {'batch':>5} "
              f"{'CPU ms/req':>10} {'idle-core cap.':>14} {'loadgen CPU':>11}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['server']:<62} {r['wrong_answers']:>5} {r['req_per_s']:>6.1f} {r['p50_ms']:>7.0f} "
              f"{r['p99_ms']:>7.0f} {r['mean_batch']:>5.1f} {r['server_cpu_ms_per_request']:>10.1f} "
              f"{r['capacity_req_per_s_on_idle_cores']:>14.0f} {100 * r['load_generator_cpu_share']:>10.1f}%")
    print(f"engine threads per server: {threads}")
    print(f"throughput, batched / unbatched (same engine threads): {rows[0]['req_per_s'] / rows[2]['req_per_s']:.2f}x; "
          f"CPU per request, unbatched / batched: "
          f"{rows[2]['server_cpu_ms_per_request'] / rows[0]['server_cpu_ms_per_request']:.2f}x (goal >= 1.5x)")
    print(f"protocol route / POST /predict, same server: {rows[1]['req_per_s'] / rows[0]['req_per_s']:.2f}x req/s")
    print(f"\noverload: {over['server']} x {args.overload_requests} requests each (limits: --max-queue "
          f"{over['max_queue']}, --max-concurrency {over['max_concurrency']}), next request at once after a 503:")
    print(f"{'accepted req/s':>14} {'p50 ms':>7} {'p99 ms':>7} {'503 share':>9} {'wrong':>5} {'peak RSS MB':>11} "
          f"{'RSS before':>10}")
    print(f"{over['accepted_req_per_s']:>14.1f} {over['p50_ms'] or 0:>7.0f} {over['p99_ms'] or 0:>7.0f} "
          f"{100 * over['share_503']:>8.1f}% {over['wrong_answers']:>5} {over['peak_rss_mb']:>11.0f} "
          f"{over['rss_before_mb']:>10.0f}")
    print(f"\nthe model alone at {ceiling[0]['resolution']} px, images/s by batch size (best of 3, interleaved):")
    print(f"{'engine':<16} " + " ".join(f"{'b' + str(b):>7}" for b in (1, 2, 4, 8, 16)) + f" {'best/b1':>8} {'b16/b1':>7}")
    for c in ceiling:
        print(f"{c['backend'] + ' ' + str(c['threads']) + ' thr':<16} "
              + " ".join(f"{v:>7.1f}" for v in c["img_per_s"].values())
              + f" {c['best_over_batch1']:>7.2f}x {c['batch16_over_batch1']:>6.2f}x")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="efficientnet_lite0", help="a model with installed pretrained weights")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests-per-client", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--also-one-engine", action="store_true",
                    help="two more servers as the previous round's default had it: one inference thread whose "
                         "engine has every core, --max-batch 16 and 1")
    ap.add_argument("--ceiling-backends", default="torch,onnx,openvino")
    ap.add_argument("--overload-clients", type=int, default=256)
    ap.add_argument("--overload-requests", type=int, default=4, help="requests per overload client")
    ap.add_argument("--quick", action="store_true", help="2 requests per client, 1 round")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "bench_serve.json"))
    args = ap.parse_args()
    if args.quick:
        args.requests_per_client, args.rounds = 2, 1
    return args


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--load-generator":
        return load_generator_main(sys.argv[2])
    args = parse_args()
    load = {"before": loadavg()}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        paths = photo_uploads(tmp)
        spec = dict(uploads=[str(p) for p in paths], expected=expected_answers(args.model, args.backend, paths),
                    clients=args.clients, per_client=args.requests_per_client)
        configs = {f"batched (--max-batch {args.max_batch})": (args.max_batch, ()),
                   "unbatched (--max-batch 1)": (1, ())}
        if args.also_one_engine:
            one = ("--infer-threads", "1", "--threads", str(os.cpu_count() or 1))
            configs[f"1 engine x {one[-1]} threads, --max-batch 16"] = (16, one)
            configs[f"1 engine x {one[-1]} threads, --max-batch 1"] = (1, one)
        servers = {name: start_server(args.model, args.backend, mb, args.max_wait_ms, tmp / f"{i}.log", extra)
                   for i, (name, (mb, extra)) in enumerate(configs.items())}
        try:
            health = {name: wait_ready(proc, port, tmp / f"{i}.log")
                      for i, (name, (proc, port)) in enumerate(servers.items())}
            rows = measure(args, servers, spec, tmp)
            over = overload(args, servers, spec, tmp, health)
        finally:
            for proc, _ in servers.values():
                proc.send_signal(signal.SIGTERM)
            for proc, _ in servers.values():
                proc.wait(timeout=120)
        load["after_serving"] = loadavg()
        ceiling = model_ceiling(args.model, args.ceiling_backends.split(","), paths)
    load["after"] = loadavg()
    backend = health[rows[0]["server"]]["backend"]
    threads = {name: f"{h['infer_threads']} x {h['threads']}" for name, h in health.items()}
    print_tables(args, backend, rows, ceiling, load, threads, over)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(
        machine=machine(), model=args.model, backend=backend, clients=args.clients, requests_per_client=args.requests_per_client,
        rounds=args.rounds, max_wait_ms=args.max_wait_ms, cpus=os.cpu_count(), load_average=load,
        engine_threads=threads,
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        throughput_ratio=round(rows[0]["req_per_s"] / rows[2]["req_per_s"], 2),
        cpu_per_request_ratio=round(rows[2]["server_cpu_ms_per_request"] / rows[0]["server_cpu_ms_per_request"], 2),
        protocol_over_predict=round(rows[1]["req_per_s"] / rows[0]["req_per_s"], 2),
        results=rows, overload=over, model_only=ceiling), indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if all(r["wrong_answers"] == 0 for r in rows) and over["wrong_answers"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

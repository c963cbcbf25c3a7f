"""``effnet serve``: an HTTP service and a web page for a classifier or a detector (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse

from ..tasks import backends


def cmd_serve(args: argparse.Namespace) -> int:
    try:  # imported here: the rest of effnet works without the serve extra
        from .app import load_served
        from .server import serve
        from .settings import ServeSettings
    except ImportError as exc:
        raise ValueError(f"effnet serve needs its extra: pip install 'effnet[serve]' ({exc})") from None
    settings = ServeSettings(
        model=args.model, pretrained=args.pretrained, backend=args.backend, calibration=args.calibration,
        host=args.host, port=args.port, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
        max_upload_mb=args.max_upload_mb, max_megapixels=args.max_megapixels, workers=args.workers,
        access_log=not args.no_access_log, infer_threads=args.infer_threads, threads=args.threads,
        name=args.name, max_queue=args.max_queue, max_concurrency=args.max_concurrency,
        body_timeout=args.body_timeout, idle_timeout=args.idle_timeout, shutdown_timeout=args.shutdown_timeout)
    served = load_served(settings)
    print(f"effnet serve: {served.name} ({served.task.name}, backend {served.backend}) on "
          f"http://{settings.host}:{settings.port}  page: /  API docs: /docs  Open Inference Protocol: "
          f"/v2/models/{settings.name or served.name}  metrics: /metrics; at most {settings.concurrency_limit} "
          f"requests in progress, {settings.queue_limit} images queued", flush=True)
    serve(settings, served)
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("serve")
    p.add_argument("--model", required=True, help="model name (with --pretrained), config .json, training run "
                                                   "directory (its model.safetensors) or effnet .safetensors file")
    p.add_argument("--pretrained", action="store_true", help="real ImageNet weights installed locally")
    p.add_argument("--backend", default="auto", choices=["auto", *backends()],
                   help="auto (default: ONNX Runtime when installed, one engine per core), or any backend "
                        "backend the model's task runs on (`effnet predict --backend` for a classifier, `effnet detect "
                        "predict --backend` for a detector; auto: PyTorch for a detector)")
    p.add_argument("--calibration", help="folder of real images to calibrate an int8 backend")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=4, help="most requests run as one batch (default 4)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits to fill up")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="larger bodies get 413")
    p.add_argument("--max-megapixels", type=float, default=40.0,
                   help="images declaring more pixels are refused before decoding (decompression bombs)")
    p.add_argument("--workers", type=int, default=1, help="server processes sharing the port")
    p.add_argument("--no-access-log", action="store_true", help="no log line per request")
    p.add_argument("--infer-threads", type=int,
                   help="inference threads per process, each running its own batch with its own engine "
                        "(default: one per core)")
    p.add_argument("--threads", type=int,
                   help="intra-op threads of each inference thread's engine (default: cores / processes / "
                        "--infer-threads, i.e. 1)")
    p.add_argument("--name", help="the model's name in the Open Inference Protocol routes (/v2/models/NAME; "
                                   "default: the model's own name, e.g. efficientnet_lite0)")
    g = p.add_argument_group("limits (admission control)")
    g.add_argument("--max-queue", type=int,
                   help="images waiting for inference beyond which requests get 503 with Retry-After "
                        "(default: 4 x max(--max-batch, 4) x inference threads)")
    g.add_argument("--max-concurrency", type=int,
                   help="inference requests in progress at once (reading, decoding, waiting); more get 503 with "
                        "Retry-After before their body is read (default: 2 x the queue)")
    g.add_argument("--body-timeout", type=float, default=30.0,
                   help="seconds a request's whole body may take to arrive, else 408 (default 30)")
    g.add_argument("--idle-timeout", type=float, default=5.0,
                   help="seconds a connection may wait for a complete request head, else closed (default 5)")
    g.add_argument("--shutdown-timeout", type=float, default=5.0,
                   help="seconds SIGTERM waits for requests already read to be answered (default 5)")
    p.set_defaults(func=cmd_serve)

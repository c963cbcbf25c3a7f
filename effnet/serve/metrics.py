"""``GET /metrics`` in Prometheus' text format (prometheus-client): requests by route and status, latency,
batch sizes, queue depth and refused requests. One registry per app (not the library's global one), so that
several apps in one process (tests) do not collide. With ``--workers N`` each process counts its own requests:
a scrape sees the worker that answered it."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest)
from starlette.routing import Match

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
disable_created_metrics()  # no *_created series: one line per count, as most exporters write them
REFUSED = {408: "body_timeout", 413: "too_large", 503: "overloaded"}  # refusals of the admission control


class Metrics:
    def __init__(self, queue_depth: Callable[[], int], in_flight: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("effnet_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=r)
        self.latency = Histogram("effnet_request_seconds", "time from request to answer, by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.refused = Counter("effnet_refused_requests", "requests refused by the admission control, by reason "
                               "(overloaded: 503, body_timeout: 408, too_large: 413)", ["reason"], registry=r)
        self.batch_size = Histogram("effnet_batch_size", "images per batch run by the model",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.images = Counter("effnet_images", "images run by the model", registry=r)
        Gauge("effnet_queue_depth", "images waiting for inference", registry=r).set_function(queue_depth)
        Gauge("effnet_requests_in_flight", "inference requests being read, decoded, waiting or run",
              registry=r).set_function(in_flight)

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)
        self.images.inc(size)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts every HTTP request by its route's template (``/v2/models/{name}/infer``, not the name sent: a
    bounded set of labels) and status, and times it."""

    def __init__(self, app, metrics: Metrics, routes: list) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    def route_of(self, scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return getattr(route, "path", "other")
        return "other"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = self.route_of(scope)
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
            if status in REFUSED:
                self.metrics.refused.labels(REFUSED[status]).inc()

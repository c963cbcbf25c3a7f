"""Dynamic batching: requests that arrive together run through the model as one batch.

Each request awaits :meth:`DynamicBatcher.submit`. One collector task waits until an inference worker is free,
then takes every item already waiting (no timer when a full batch is there), waits at most ``max_wait_ms``
for more up to ``max_batch``, and hands the batch to that worker's thread, so the event loop never waits on
the model. While the workers are busy, new requests queue up (already decoded) and form the next batch.

The queue is bounded (``max_queue`` items): :meth:`DynamicBatcher.submit_all` refuses a request whose items
would not fit with :class:`QueueFull`, which the service answers with 503 and ``Retry-After`` (the time the
queue in front of it would take, from the measured batch time).

``workers`` inference threads run batches side by side; each thread keeps its own engine (see
:class:`effnet.serve.models.Engines`) with ``cores / workers`` intra-op threads, so the machine is never
oversubscribed (workers x threads = cores). Hand-written: the serving libraries on PyPI that batch (Ray Serve,
BentoML, Triton) each bring a whole runtime; this is one small asyncio loop.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


@dataclass
class BatchStats:
    requests: int = 0
    batches: int = 0
    largest_batch: int = 0
    refused: int = 0  # items refused because the queue was full
    batch_seconds: float = 0.0  # moving average of a batch's run time


class QueueFull(Exception):
    """The queue cannot take the items; ``retry_after`` is the whole seconds until it likely can."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DynamicBatcher:
    """Gathers items for ``run_batch(list) -> list`` (one result per item, same order).

    ``initializer(*initargs)`` runs once in each worker thread (e.g. ``torch.set_num_threads``).
    """

    def __init__(self, run_batch: Callable[[Sequence[Any]], Sequence[Any]], max_batch: int = 16,
                 max_wait_ms: float = 5.0, workers: int = 1, initializer: Callable | None = None,
                 initargs: tuple = (), max_queue: int | None = None,
                 on_batch: Callable[[int], None] | None = None) -> None:
        if max_batch < 1 or workers < 1 or (max_queue is not None and max_queue < 1):
            raise ValueError("max_batch, workers and max_queue must be >= 1")
        self.max_queue = max_queue
        self.on_batch = on_batch  # called with each batch's size (metrics)
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.stats = BatchStats()
        # one single-thread executor per worker: a worker runs one batch at a time, always on the same thread
        self._executors = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"effnet-infer{i}",
                                              initializer=initializer, initargs=initargs) for i in range(workers)]
        self._queue: asyncio.Queue | None = None
        self._free: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._free = asyncio.Queue()
        for i in range(len(self._executors)):
            self._free.put_nowait(i)
        self._task = asyncio.get_running_loop().create_task(self._collect_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._running, return_exceptions=True)  # batches already handed to a worker
        for executor in self._executors:
            executor.shutdown(wait=True)

    @property
    def pending(self) -> int:
        """Items waiting for a worker (not those already running)."""
        return 0 if self._queue is None else self._queue.qsize()

    def retry_after(self, extra: int = 0) -> int:
        """Whole seconds until ``extra`` more items would likely be run: the batches in front of them, side by
        side on the workers, at the measured batch time."""
        batches = math.ceil((self.pending + extra) / self.max_batch / len(self._executors))
        return max(1, math.ceil(batches * self.stats.batch_seconds))

    def check_room(self, count: int = 1) -> None:
        """Raise :class:`QueueFull` unless ``count`` more items fit in the queue now."""
        if self.max_queue is not None and self.pending + count > self.max_queue:
            self.stats.refused += count
            raise QueueFull(f"server busy: {self.pending} images are waiting for inference, the queue holds "
                            f"{self.max_queue} (--max-queue); retry later", self.retry_after(count))

    async def submit(self, item: Any) -> Any:
        return (await self.submit_all([item]))[0]

    async def submit_all(self, items: Sequence[Any]) -> list[Any]:
        """Queue all ``items`` at once (or none: :class:`QueueFull`) and wait for their results, in order."""
        if self._queue is None:
            raise RuntimeError("DynamicBatcher.start() was not called")
        self.check_room(len(items))
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        for item, future in zip(items, futures):
            self._queue.put_nowait((item, future))
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:
            for future in futures:  # the client went away, or one image failed: drop the rest
                future.cancel()
            raise

    async def _gather(self) -> list[tuple[Any, asyncio.Future]]:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            if not self._queue.empty():  # already waiting: take it without a timer
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _collect_forever(self) -> None:
        while True:
            worker = await self._free.get()  # gather only once a worker can take the batch: it fills meanwhile
            batch = [(item, fut) for item, fut in await self._gather() if not fut.cancelled()]
            if not batch:
                self._free.put_nowait(worker)
                continue
            self.stats.requests += len(batch)
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            if self.on_batch is not None:
                self.on_batch(len(batch))
            task = asyncio.get_running_loop().create_task(self._run(worker, batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, worker: int, batch: list[tuple[Any, asyncio.Future]]) -> None:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executors[worker], self.run_batch, [i for i, _ in batch])
            seconds = time.perf_counter() - start
            self.stats.batch_seconds = seconds if not self.stats.batch_seconds else (
                0.8 * self.stats.batch_seconds + 0.2 * seconds)
        except Exception as exc:  # the model failed: every waiting request learns it, the loop goes on
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        finally:
            self._free.put_nowait(worker)
        for (_, fut), result in zip(batch, results):
            if not fut.done():  # the client may have gone away
                fut.set_result(result)

"""Dynamic batching: requests that arrive together run through the model as one batch.

Each request awaits :meth:`DynamicBatcher.submit`; one collector task takes the first waiting item, then
whatever else arrives within ``max_wait_ms`` up to ``max_batch`` items, and runs the whole batch on a single
inference thread, so the event loop never waits on the model. While one batch runs, the next requests
queue up and form the next batch. Hand-written: the serving libraries on PyPI that batch (Ray Serve,
BentoML, Triton) each bring a whole runtime; this is one small asyncio loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


@dataclass
class BatchStats:
    requests: int = 0
    batches: int = 0
    largest_batch: int = 0


class DynamicBatcher:
    """Gathers items for ``run_batch(list) -> list`` (one result per item, same order)."""

    def __init__(self, run_batch: Callable[[Sequence[Any]], Sequence[Any]], max_batch: int = 16,
                 max_wait_ms: float = 5.0) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.stats = BatchStats()
        # one thread: batches run one after another, each using all of the model's own intra-op threads
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="effnet-infer")
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._collect_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def submit(self, item: Any) -> Any:
        if self._queue is None:
            raise RuntimeError("DynamicBatcher.start() was not called")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _gather(self) -> list[tuple[Any, asyncio.Future]]:
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(batch) < self.max_batch:
            if not self._queue.empty():  # already waiting: take it without a timer
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _collect_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [(item, fut) for item, fut in await self._gather() if not fut.cancelled()]
            if not batch:
                continue
            self.stats.requests += len(batch)
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            try:
                results = await loop.run_in_executor(self._executor, self.run_batch, [i for i, _ in batch])
            except Exception as exc:  # the model failed: every waiting request learns it, the loop goes on
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(batch, results):
                if not fut.done():  # the client may have gone away
                    fut.set_result(result)

"""From request bodies to answers: images decoded on a thread pool, queued for the batcher together, answered in
order in effnet's result schema. The event loop only moves bytes; the work a request may cause is bounded before
it is done (the number of images against the queue's room, each image's declared and resized size)."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from fastapi import UploadFile
from fastapi.responses import JSONResponse

from ..deploy.engines import ServedModel
from .batching import DynamicBatcher
from .decode import ImageRejected, decode_upload
from .settings import ServeSettings


class Inference:
    """The served model's decoding pool and batcher, and the three ways a route hands it work."""

    def __init__(self, served: ServedModel, settings: ServeSettings, batcher: DynamicBatcher) -> None:
        self.served, self.settings, self.batcher = served, settings, batcher
        # Each decoding thread runs torch's preprocessing ops single-threaded: an image's resize is ~1 ms on one
        # thread but took ~40 ms with 2 OpenMP threads fighting over busy cores. Parallelism comes from the pool.
        self.decoders = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="effnet-decode",
                                           initializer=torch.set_num_threads, initargs=(1,))

    def prepare(self, data: bytes, options: dict):
        image = decode_upload(data, self.settings.max_pixels, self.served.refuse_size)
        return self.served.preprocess(image, **options)

    def check_count(self, count: int) -> None:
        if not count:
            raise ImageRejected(400, "no image in the request")
        if count > self.settings.queue_limit:  # could never be queued
            raise ImageRejected(413, f"{count} images in one request; at most {self.settings.queue_limit} "
                                     "(--max-queue)")
        self.batcher.check_room(count)  # before any decoding: a full queue refuses at once

    async def run_images(self, images: list[bytes], names: list[str | None], options: dict) -> list:
        """Each image decoded on a thread, then all of them queued for the batcher together; in order."""
        self.check_count(len(images))
        loop = asyncio.get_running_loop()

        async def one(i: int, data: bytes):
            try:
                return await loop.run_in_executor(self.decoders, self.prepare, data, options)
            except ImageRejected as exc:
                if len(images) == 1:
                    raise
                raise ImageRejected(exc.status, f"image {i + 1} ({names[i] or 'unnamed'}): {exc}") from None

        return await self.batcher.submit_all(await asyncio.gather(*[one(i, data) for i, data in enumerate(images)]))

    async def run_inputs(self, inputs: list) -> list:
        """Already preprocessed inputs (the protocol's FP32 tensor), queued together; in order."""
        self.check_count(len(inputs))
        return await self.batcher.submit_all(inputs)

    async def answer_uploads(self, files: list[UploadFile], **options) -> JSONResponse:
        """The task route's answer: one result per uploaded file, in the order sent."""
        start = time.perf_counter()
        datas = [await f.read() for f in files]
        names = [f.filename or None for f in files]
        outputs = await self.run_images(datas, names, options)
        results = [self.served.answer(out, path=n, **options) for out, n in zip(outputs, names)]
        # returned as a response: FastAPI would otherwise validate and re-encode it with pydantic, on the
        # event loop, for every request (response_model still documents it)
        return JSONResponse({"model": self.served.name, "results": results,
                             "ms": round((time.perf_counter() - start) * 1000, 2)})

    def shutdown(self) -> None:
        self.decoders.shutdown(wait=True)

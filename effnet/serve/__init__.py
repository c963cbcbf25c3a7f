"""effnet serve: an HTTP service and a web page for a classifier or a detector, with dynamic batching
(FastAPI + uvicorn).

Modules (imported on use, so that ``effnet`` works without the ``serve`` extra): ``app.create_app(served,
settings)`` builds the FastAPI app for a loaded model, ``server.serve(settings)`` runs it with uvicorn,
``models`` holds the :class:`~effnet.serve.models.ServedModel` interface (kind, preprocess, run_batch,
answer) that ``Classifier`` (``POST /predict``) and ``Detector`` (``POST /detect``) implement,
``batching.DynamicBatcher`` gathers concurrent requests into batches run by one or more inference threads,
``decode.decode_upload`` turns untrusted bytes into an image or a 4xx reason.
"""

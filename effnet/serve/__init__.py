"""effnet serve: an HTTP service and a web page for a classifier or a detector, with dynamic batching
(FastAPI + uvicorn).

Modules (imported on use, so that ``effnet`` works without the ``serve`` extra): ``app.create_app(served,
settings)`` builds the FastAPI app for a loaded model, ``server.serve(settings)`` runs it with uvicorn,
``models.load_model`` puts the model a user names behind its task's :class:`~effnet.deploy.engines.ServedModel`
(kind, preprocess, run_batch, answer): ``effnet.classify.served`` (``POST /predict``) or ``effnet.detect.served``
(``POST /detect``),
``batching.DynamicBatcher`` gathers concurrent requests into batches run by one or more inference threads,
``decode.decode_upload`` turns untrusted bytes into an image or a 4xx reason.
"""

"""effnet serve: an HTTP service and a web page for a classifier or a detector, with dynamic batching, admission
control, the Open Inference Protocol (KServe v2) and Prometheus metrics (FastAPI + uvicorn).

Modules (imported on use, so that ``effnet`` works without the ``serve`` extra): ``app.create_app(served,
settings)`` builds the FastAPI app for a loaded model, ``server.serve(settings)`` runs it with uvicorn,
``models.load_model`` puts the model a user names behind its task's :class:`~effnet.deploy.engines.ServedModel`
(its task object, preprocess, run_batch, answer, and the protocol's tensors), ``routes`` adds the task's own
route from its task object (``POST /predict`` for a classifier, ``POST /detect`` for a detector, whatever a
registered task declares), ``inference`` decodes and queues a request's images, ``protocol_routes`` the ``/v2``
routes and ``protocol`` parses and writes their bodies (JSON and binary tensors), ``batching.DynamicBatcher`` gathers concurrent requests into batches run by one or more
inference threads from a bounded queue, ``limits`` refuses what is over the limits before reading it (body
size, requests in flight, a full queue, late bodies), ``decode.decode_upload`` turns untrusted bytes into an
image or a 4xx reason, ``metrics`` counts for ``GET /metrics``.
"""

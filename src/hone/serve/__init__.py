"""hone serve: an inference server with dynamic batching that speaks the KServe v2 protocol.

Modules, one job each:

- ``config.py``      ``BatchConfig`` (the batcher's knobs, validated when given) and the model
                     repository layout (one folder per model, numbered versions, ``config.json``).
- ``datatypes.py``   the KServe v2 tensor datatypes and their numpy dtypes, both ways.
- ``model_runner.py`` ``ModelRunner``: one model version, N onnxruntime sessions (instances) that
                     share the cores, every batch size warmed at load; ``run(feeds)`` on a batch.
- ``batch_rows.py``  requests' inputs joined into a batch and its outputs split back per request,
                     with the row check (shared by the batcher and Ray's replicas).
- ``batcher.py``     ``Batcher``: requests in, batches out. Requests wait in a bounded priority
                     queue; a batch closes when it reaches ``max_batch_size`` (or a preferred size)
                     or when its oldest request has waited ``max_queue_delay_ms``; only requests
                     whose non-batch dims agree share a batch; the outputs are split back per
                     request in order. A full queue refuses at once (``QueueFullError``), an
                     expired request gets ``RequestTimeoutError``, a failed batch fails every
                     request in it.
- ``registry.py``    ``ModelRegistry``: the served models (runner + batcher per version), load and
                     unload, readiness, the drain on shutdown.
- ``protocol.py``    pure decoding/encoding of v2 requests and responses (JSON tensors and the
                     binary tensor extension), every check a 400 with what was wrong.
- ``extensions.py``  the JSON of server/model metadata, Triton's model config, statistics and
                     repository index.
- ``metrics.py``     Prometheus metrics on their own port, named like Triton's.
- ``http.py``        the v2 HTTP routes (FastAPI), thin handlers over the modules above.
- ``grpc_api.py``    the same service over gRPC (Triton's GRPCInferenceService).
- ``server.py``      start/stop: HTTP, gRPC, metrics, readiness, SIGTERM drain.
- ``ray_serve.py``   ``hone serve --ray``: the runner and HTTP routes as Ray Serve replicas.

The batcher's contract (what the protocol layers call)::

    batcher = Batcher(runner, BatchConfig(max_batch_size=32, max_queue_delay_ms=2.0))
    await batcher.start()
    outputs = await batcher.submit({"x": array}, priority=0, timeout_ms=None)  # dict name -> array
    await batcher.stop()          # stop accepting, answer every accepted request, then return
    batcher.stats                 # BatcherStats: counts and cumulative queue/compute times
"""

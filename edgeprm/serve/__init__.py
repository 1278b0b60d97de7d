"""`edgeprm serve`: a batching HTTP scoring service for one loaded PRM (FastAPI + uvicorn).

    edgeprm serve --model M [--backend torch|onnx] [--quantization ...] [--host 127.0.0.1 --port 8000]

app.py (endpoints, API key, body limit), batcher.py (dynamic batching under a token budget, bounded queue),
limits.py (`ServeLimits`), metrics.py (Prometheus), schema.py (the pydantic request/response models the OpenAPI
schema is built from), server.py (uvicorn on a socket bound before the model loads, graceful SIGTERM). The client is
`edgeprm.client.Client`. Importing this package imports no web framework; `create_app` does.
"""

from edgeprm.serve.limits import ServeLimits

__all__ = ["ServeLimits", "create_app"]


def __getattr__(name):
    if name == "create_app":
        from edgeprm.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'edgeprm.serve' has no attribute {name!r}")

"""The ASGI app of `edgeprm serve`: endpoints, API key, body limit, metrics, and dynamic batching behind them.

    POST /v1/score     {"rows": [row, ...]} -> {"rows": [row + step_rewards, trajectory_reward, score, ...]}
    POST /get_reward   OpenRLHF's remote reward model: {"query": [...], "prompts"?: [...], "labels"?: [...]}
                       -> {"rewards": [...]}, the problem and steps recovered by the server's `QueryTemplate`
    GET  /health       status, model, limits (never needs the API key)
    GET  /metrics      Prometheus text (edgeprm.serve.metrics)

Why FastAPI + uvicorn and not LitServe: LitServe batches a fixed number of *requests* per call (max_batch_size,
batch_timeout) in worker processes that each load the model, while a PRM request carries any number of rows of very
different lengths: the batch that matters is rows under a token budget (the scorer's own `length_buckets`), formed
across requests, with admission refused at once when the queue is full. That is a small asyncio batcher
(`edgeprm.serve.batcher`) in front of one scorer; FastAPI gives it pydantic validation and an OpenAPI schema built
from the same models, uvicorn graceful shutdown (SIGTERM: stop accepting, finish the requests in flight, then the
lifespan shutdown drains the batcher).

Every row is checked and encoded with `scorer.prepare` before it is queued, so a bad row is a 422 naming the row and
the field and never reaches a batch. The server scores with the one model it was started with: no endpoint reads or
writes files or loads anything a client names.
"""


import hmac
import math
import time
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer

from edgeprm.rl.template import QueryTemplate
from edgeprm.serve.batcher import Batcher, QueueFull
from edgeprm.serve.limits import ServeLimits
from edgeprm.serve.metrics import Metrics
from edgeprm.serve.schema import Message, RewardResponse, ScoreResponse, ValidationMessage, models

ENDPOINTS = ("/v1/score", "/get_reward", "/health", "/metrics", "/openapi.json", "/docs")
OPEN = ("/health",)  # reachable without the API key


class RowErrors(Exception):
    """One or more rows refused by `scorer.prepare` (or by the query template): FastAPI's 422 items."""

    def __init__(self, items: list[dict]):
        super().__init__(f"{len(items)} bad rows")
        self.items = items


def _json(status: int, body: dict, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


class Guard:
    """Pure ASGI middleware, outermost first: metrics (latency, status, in flight), the API key, the body limit.

    The body is read here up to `max_body_bytes` (a declared Content-Length over it is refused before reading), so
    an oversized request costs at most that much memory and never reaches JSON parsing.
    """

    def __init__(self, app, api_key: str | None, limits: ServeLimits, metrics: Metrics):
        self.app, self.limits, self.metrics = app, limits, metrics
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        status = {"code": 500}

        async def send_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        m = self.metrics
        m.in_flight.inc()
        t0 = time.perf_counter()
        try:
            await self._guarded(scope, receive, send_status, path)
        finally:
            m.in_flight.dec()
            m.latency.labels(endpoint).observe(time.perf_counter() - t0)
            m.requests.labels(endpoint, str(status["code"])).inc()

    async def _guarded(self, scope, receive, send, path):
        if self.expected is not None and path not in OPEN:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                self.metrics.rejected.labels("unauthorized").inc()
                return await _json(401, {"detail": "missing or wrong API key: send 'Authorization: Bearer <key>'"},
                                   {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        media = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        if media != b"application/json" and not media.endswith(b"+json"):
            self.metrics.rejected.labels("media_type").inc()
            return await _json(415, {"detail": f"the body must be JSON (Content-Type: application/json); got "
                                               f"{media.decode('latin-1')!r}"})(scope, receive, send)
        limit = self.limits.max_body_bytes
        declared = headers.get(b"content-length")
        too_large = {"detail": f"the request body is over the server's limit of {limit} bytes; send fewer rows per "
                               "request"}
        if declared is not None and declared.isdigit() and int(declared) > limit:
            self.metrics.rejected.labels("body_too_large").inc()
            return await _json(413, too_large)(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                self.metrics.rejected.labels("body_too_large").inc()
                return await _json(413, too_large)(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _finite(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def create_app(scorer, limits: ServeLimits | None = None, api_key: str | None = None,
               template: QueryTemplate | None = None, model_name: str | None = None) -> FastAPI:
    """The app serving one loaded scorer (an `edgeprm.load` result) under these limits."""
    limits = limits or ServeLimits()
    template = template or QueryTemplate(split=scorer.config.split)
    metrics = Metrics.create()
    batcher = Batcher(scorer, limits, metrics)
    m = models(limits)
    ScoreRequest, RewardRequest = m.score_request, m.reward_request  # noqa: N806 (classes)

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.close()  # after uvicorn finished the requests in flight

    app = FastAPI(title="edgeprm serve", version="1", lifespan=lifespan,
                  description="Process-reward-model scoring with dynamic batching. A bad row answers 422 naming the "
                              "row and the field; a full queue answers 503 with Retry-After.")
    protected = [Depends(HTTPBearer(auto_error=False))] if api_key else []  # documents the scheme; Guard checks it
    errors = {400: {"model": Message, "description": "the body could not be decoded (not UTF-8 JSON)"},
              401: {"model": Message, "description": "missing or wrong API key (servers started with --api-key)"},
              413: {"model": Message, "description": "request body over the limit"},
              415: {"model": Message, "description": "the body is not JSON"},
              422: {"model": ValidationMessage, "description": "a bad row: loc names the row and the field"},
              503: {"model": Message, "description": "queue full or shutting down: retry after Retry-After seconds"}}

    def prepare_all(rows: list[dict], where: str) -> list:
        prepared, bad = [], []
        for i, row in enumerate(rows):
            try:
                prepared.append(scorer.prepare(row))
            except ValueError as e:
                bad.append({"loc": ["body", where, i], "msg": str(e), "type": "value_error"})
        if bad:
            raise RowErrors(bad)
        return prepared

    async def scored(prepared: list, endpoint: str) -> list:
        results = await batcher.submit(prepared)  # QueueFull -> 503 below
        metrics.rows.labels(endpoint).inc(len(prepared))
        return results

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request, exc: RequestValidationError):
        # FastAPI's 422 without the echoed input (it can be megabytes) and the error context
        metrics.rejected.labels("invalid_body").inc()
        return _json(422, {"detail": [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                                      for e in exc.errors()]})

    @app.exception_handler(RowErrors)
    async def row_errors(request, exc: RowErrors):
        metrics.rejected.labels("invalid_row").inc()
        return _json(422, {"detail": exc.items})

    @app.exception_handler(QueueFull)
    async def queue_full(request, exc: QueueFull):
        metrics.rejected.labels("queue_full").inc()
        return _json(503, {"detail": str(exc)}, {"Retry-After": str(exc.retry_after_s)})

    @app.post("/v1/score", response_model=ScoreResponse, responses=errors, dependencies=protected)
    async def score(body: ScoreRequest):
        """Score rows: each comes back as sent plus step_rewards, trajectory_reward, score, truncated, num_tokens."""
        rows = [r.model_dump(exclude_unset=True) for r in body.rows]
        prepared = await run_in_threadpool(prepare_all, rows, "rows")
        results = await scored(prepared, "/v1/score")
        out = []
        for row, r in zip(rows, results):
            d = r.to_dict(with_id=False)
            d["score"] = _finite(d["score"])
            out.append({**row, **d})
        return JSONResponse({"rows": out})

    @app.post("/get_reward", response_model=RewardResponse, responses=errors, dependencies=protected)
    async def get_reward(body: RewardRequest):
        """OpenRLHF's remote reward model: one reward (the scorer's aggregated score) per query."""
        prompts = body.prompts or [None] * len(body.query)

        def parse_and_prepare():
            trajs, bad = [], []
            for i, (q, p) in enumerate(zip(body.query, prompts)):
                try:
                    trajs.append(template.parse_query(q, p, where=f"query {i}").trajectory)
                except ValueError as e:
                    bad.append({"loc": ["body", "query", i], "msg": str(e), "type": "value_error"})
            if bad:
                raise RowErrors(bad)
            keep = [i for i, t in enumerate(trajs) if t is not None]
            try:
                return keep, prepare_all([trajs[i] for i in keep], "query")
            except RowErrors as e:  # indices among the kept -> indices of the queries
                for item in e.items:
                    item["loc"][2] = keep[item["loc"][2]]
                raise

        keep, prepared = await run_in_threadpool(parse_and_prepare)
        results = await scored(prepared, "/get_reward")
        rewards = [limits.empty_reward] * len(body.query)
        for i, r in zip(keep, results):
            rewards[i] = limits.empty_reward if math.isnan(r.score) else r.score
        return JSONResponse({"rewards": rewards})

    @app.get("/health")
    async def health() -> dict:
        """Liveness and what this server scores with (no API key needed)."""
        return {"status": "ok", "model": model_name, "family": scorer.family.value, "backend": scorer.config.backend,
                "aggregation": scorer.aggregation, "max_length": scorer.max_length,
                "limits": {**limits.to_dict(), "batch_tokens": batcher.batch_tokens,
                           "max_batch_rows": batcher.max_rows}}

    @app.get("/metrics", dependencies=protected, response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text exposition"}, 401: errors[401]})
    async def prometheus():
        """Requests, rows, tokens, batch sizes, queue depth and latency in the Prometheus text format."""
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    app.add_middleware(Guard, api_key=api_key, limits=limits, metrics=metrics)
    app.state.batcher, app.state.metrics, app.state.limits = batcher, metrics, limits
    return app

"""The server's Prometheus metrics (prometheus-client), in a registry of their own per app.

A registry per app (not the process-global one) keeps two servers in one process, as in tests, from sharing
counters. `GET /metrics` renders it in the Prometheus text format.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class Metrics:
    """requests (by endpoint and status), rows and tokens scored, rows per forward batch and requests per dynamic
    batch, queue depth (rows and requests waiting), requests in flight, latency per endpoint, scoring time per batch,
    and rejections by reason."""

    registry: CollectorRegistry
    requests: Counter
    rows: Counter
    tokens: Counter
    batch_rows: Histogram
    batch_requests: Histogram
    queue_rows: Gauge
    queue_requests: Gauge
    in_flight: Gauge
    latency: Histogram
    batch_seconds: Histogram
    rejected: Counter

    @classmethod
    def create(cls) -> Metrics:
        r = CollectorRegistry()
        return cls(
            registry=r,
            requests=Counter("edgeprm_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                             registry=r),
            rows=Counter("edgeprm_rows", "rows (or queries) scored, by endpoint", ["endpoint"], registry=r),
            tokens=Counter("edgeprm_tokens", "tokens of the rows scored (the PRM's tokens, unpadded)", registry=r),
            batch_rows=Histogram("edgeprm_batch_rows", "rows per forward batch", buckets=ROW_BUCKETS, registry=r),
            batch_requests=Histogram("edgeprm_batch_requests", "requests merged into one dynamic batch",
                                     buckets=ROW_BUCKETS, registry=r),
            queue_rows=Gauge("edgeprm_queue_rows", "rows admitted and waiting to be batched", registry=r),
            queue_requests=Gauge("edgeprm_queue_requests", "requests admitted and waiting to be batched", registry=r),
            in_flight=Gauge("edgeprm_requests_in_flight", "requests being handled", registry=r),
            latency=Histogram("edgeprm_request_seconds", "request latency by endpoint", ["endpoint"],
                              buckets=LATENCY_BUCKETS, registry=r),
            batch_seconds=Histogram("edgeprm_batch_seconds", "scoring time of one dynamic batch",
                                    buckets=LATENCY_BUCKETS, registry=r),
            rejected=Counter("edgeprm_rejected", "requests refused, by reason", ["reason"], registry=r),
        )

    def render(self) -> tuple[bytes, str]:
        """(body, content type) of the Prometheus text exposition."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

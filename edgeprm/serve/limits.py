"""`ServeLimits`: every bound of `edgeprm serve` in one frozen, validated place (torch-free).

A server that scores for many RL workers must never grow without bound: the request body, the rows in one request,
the tokens in one row (the scorer's own length policy: `max_length`, `truncate`), and the rows waiting to be batched
are all capped. Past a cap the client gets a clear 4xx (413 body too large, 422 too many rows or a row too long) or a
503 with Retry-After (queue full) and the server keeps serving.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ServeLimits:
    """max_body_bytes: largest request body (413 above). max_rows_per_request: rows (or queries) in one request.
    max_queue_rows: rows admitted and waiting to be batched, over all requests (503 + Retry-After above).
    batch_window_ms: how long the oldest waiting request may wait for others to join its batch.
    batch_tokens / max_batch_rows: a dynamic batch's padded tokens (rows x longest) and rows; None = the scorer's
    token_budget / max_batch_size, so that one dynamic batch is one forward. retry_after_s: the Retry-After of a 503.
    empty_reward: /get_reward's reward for a response with no text (no steps to score).
    """

    max_body_bytes: int = 8 * 1024 * 1024
    max_rows_per_request: int = 256
    max_queue_rows: int = 2048
    batch_window_ms: float = 5.0
    batch_tokens: int | None = None
    max_batch_rows: int | None = None
    retry_after_s: int = 1
    empty_reward: float = 0.0

    def __post_init__(self):
        for name in ("max_body_bytes", "max_rows_per_request", "max_queue_rows", "retry_after_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        for name in ("batch_tokens", "max_batch_rows"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None (the scorer's); got {value!r}")
        if not isinstance(self.batch_window_ms, (int, float)) or not 0 <= self.batch_window_ms <= 10_000:
            raise ValueError(f"batch_window_ms must be between 0 and 10000; got {self.batch_window_ms!r}")
        if self.max_rows_per_request > self.max_queue_rows:
            raise ValueError(f"max_rows_per_request ({self.max_rows_per_request}) must not exceed max_queue_rows "
                             f"({self.max_queue_rows}): a request that large could never be admitted")

    def to_dict(self) -> dict:
        return asdict(self)

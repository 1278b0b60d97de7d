"""Dynamic batching: requests that arrive within a short window are scored in one forward.

Requests hold rows already checked and encoded (`scorer.prepare`), so a bad row was refused before it could join a
batch. Waiting requests sit in a FIFO bounded in rows (`ServeLimits.max_queue_rows`): a request that does not fit is
refused at once (`QueueFull` -> 503 with Retry-After), it never waits for room. One task forms batches: it takes the
oldest waiting requests, in order, while they fit one forward of the scorer (batch size x longest row <= the token
budget, at most `max_batch_rows` rows; a request too big for one forward goes alone and the scorer splits it), after
waiting at most `batch_window_ms` from the oldest one's arrival for others to join (no wait once a batch is full, or
while the previous batch was being scored and requests piled up). Scoring runs in one worker thread, so the event loop
keeps accepting and validating requests meanwhile, and one batch at a time holds the model.

Results are identical to scoring each request alone: the scorer's results do not depend on batch composition or
padding. A batch that fails as a whole (which a prepared row should never cause) is scored again request by request,
so an error stays with the request that caused it and never reaches the others in its batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from edgeprm.serve.limits import ServeLimits
from edgeprm.serve.metrics import Metrics

log = logging.getLogger("edgeprm.serve")


class QueueFull(Exception):
    """The request's rows do not fit in the queue now (or the server is shutting down)."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class _Waiting:
    items: Sequence  # Prepared
    future: asyncio.Future
    arrival: float
    longest: int = field(init=False)

    def __post_init__(self):
        self.longest = max(it.num_tokens for it in self.items)


class Batcher:
    """Forms dynamic batches of prepared rows and scores them with `scorer.score_prepared` in one worker thread.

    `await batcher.submit(prepared_rows)` -> their ScoreResults, in order. Start with `start()` inside the running
    event loop; `close()` scores everything already admitted, then stops.
    """

    def __init__(self, scorer, limits: ServeLimits, metrics: Metrics):
        self.scorer, self.limits, self.metrics = scorer, limits, metrics
        self.batch_tokens = limits.batch_tokens or scorer.token_budget
        self.max_rows = limits.max_batch_rows or scorer.max_batch_size
        self.window = limits.batch_window_ms / 1000.0
        self._waiting: deque[_Waiting] = deque()
        self._waiting_rows = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgeprm-score")

    # -- lifecycle -------------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="edgeprm-batcher")

    async def close(self) -> None:
        """Score every admitted request, then stop the batching task and the worker thread."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    # -- admission -------------------------------------------------------------------------------------------------
    async def submit(self, items: Sequence) -> list:
        """Queue prepared rows for the next batch and wait for their results (QueueFull when they do not fit)."""
        if not items:
            return []
        if self._closing or self._task is None or self._task.done():
            raise QueueFull("the server is shutting down", self.limits.retry_after_s)
        n = len(items)
        if self._waiting_rows + n > self.limits.max_queue_rows:
            raise QueueFull(f"the queue is full ({self._waiting_rows} rows waiting, {n} more would exceed "
                            f"{self.limits.max_queue_rows}); retry after {self.limits.retry_after_s} s",
                            self.limits.retry_after_s)
        loop = asyncio.get_running_loop()
        waiting = _Waiting(items, loop.create_future(), loop.time())
        self._waiting.append(waiting)
        self._waiting_rows += n
        self._gauges()
        self._wake.set()
        return await waiting.future

    def _gauges(self) -> None:
        self.metrics.queue_rows.set(self._waiting_rows)
        self.metrics.queue_requests.set(len(self._waiting))

    # -- batching --------------------------------------------------------------------------------------------------
    def _fits(self, rows: int, longest: int, w: _Waiting) -> bool:
        rows, longest = rows + len(w.items), max(longest, w.longest)
        return rows <= self.max_rows and rows * longest <= self.batch_tokens

    def _full(self) -> bool:
        """Whether the waiting requests already fill a batch (so waiting longer cannot add anything)."""
        rows = longest = 0
        for w in self._waiting:
            if not self._fits(rows, longest, w):
                return True
            rows, longest = rows + len(w.items), max(longest, w.longest)
        return False

    def _take(self) -> list[_Waiting]:
        batch: list[_Waiting] = []
        rows = longest = 0
        while self._waiting:
            w = self._waiting[0]
            if w.future.done():  # its client went away (cancelled): drop it unscored
                self._waiting.popleft()
                self._waiting_rows -= len(w.items)
                continue
            if batch and not self._fits(rows, longest, w):
                break
            self._waiting.popleft()
            self._waiting_rows -= len(w.items)
            batch.append(w)
            rows, longest = rows + len(w.items), max(longest, w.longest)
        self._gauges()
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._waiting:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            deadline = self._waiting[0].arrival + self.window
            while not self._closing and not self._full():
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except asyncio.TimeoutError:
                    break
            batch = self._take()
            if batch:
                await self._score(batch)

    async def _score(self, batch: list[_Waiting]) -> None:
        loop = asyncio.get_running_loop()
        items = [it for w in batch for it in w.items]
        t0 = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self.scorer.score_prepared, items)
        except Exception:
            log.exception("a batch of %d requests failed; scoring them one by one", len(batch))
            for w in batch:
                try:
                    self._deliver(w, await loop.run_in_executor(self._executor, self.scorer.score_prepared, w.items))
                except Exception as e:  # this request's own failure, reported to it alone
                    if not w.future.done():
                        w.future.set_exception(e)
            return
        self._observe(batch, items, time.perf_counter() - t0)
        start = 0
        for w in batch:
            self._deliver(w, results[start : start + len(w.items)])
            start += len(w.items)

    @staticmethod
    def _deliver(w: _Waiting, results: list) -> None:
        if not w.future.done():
            w.future.set_result(results)

    def _observe(self, batch: list[_Waiting], items: list, seconds: float) -> None:
        m = self.metrics
        m.batch_requests.observe(len(batch))
        m.batch_seconds.observe(seconds)
        lengths = [it.num_tokens for it in items]
        m.tokens.inc(sum(lengths))
        for group in self.scorer.batches(lengths):  # the forwards score_prepared ran (the same grouping)
            m.batch_rows.observe(len(group))

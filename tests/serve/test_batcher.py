"""The dynamic batcher in-process with a real scorer: requests within the window share one forward, batches respect
the token budget and row cap, a full queue refuses at once, a failing request fails alone, close() drains."""

import asyncio
import dataclasses

import pytest

from edgeprm.serve.batcher import Batcher, QueueFull
from edgeprm.serve.limits import ServeLimits
from edgeprm.serve.metrics import Metrics

from .rows import random_rows


class Spy:
    """The real scorer, recording the rows of every score_prepared call (one call = one dynamic batch)."""

    def __init__(self, scorer):
        self.scorer, self.calls = scorer, []

    def __getattr__(self, name):
        return getattr(self.scorer, name)

    def score_prepared(self, items, progress=False):
        self.calls.append([it.num_tokens for it in items])
        return self.scorer.score_prepared(items, progress)


def run(coro):
    return asyncio.run(coro)


def prepared(scorer, n):
    return [scorer.prepare(r) for r in random_rows(n)]


def test_requests_in_one_window_share_a_batch_and_get_their_own_results(tiny_scorer):
    spy = Spy(tiny_scorer)
    items = prepared(tiny_scorer, 12)
    want = tiny_scorer.score_prepared(items)

    async def go():
        b = Batcher(spy, ServeLimits(batch_window_ms=200, batch_tokens=10**6, max_batch_rows=64), Metrics.create())
        await b.start()
        parts = [items[0:3], items[3:4], items[4:9], items[9:12]]
        got = await asyncio.gather(*(b.submit(p) for p in parts))
        await b.close()
        return parts, got

    parts, got = run(go())
    assert len(spy.calls) == 1 and len(spy.calls[0]) == 12
    flat = [r for g in got for r in g]
    assert [len(g) for g in got] == [len(p) for p in parts]
    for a, w in zip(flat, want):
        assert max(abs(x - y) for x, y in zip(a.step_rewards, w.step_rewards)) <= 1e-6 and a.id == w.id


def test_batches_respect_the_token_budget_and_row_cap(tiny_scorer):
    spy = Spy(tiny_scorer)
    items = prepared(tiny_scorer, 16)
    longest = max(it.num_tokens for it in items)
    budget = 3 * longest

    async def go():
        b = Batcher(spy, ServeLimits(batch_window_ms=100, batch_tokens=budget, max_batch_rows=2), Metrics.create())
        await b.start()
        await asyncio.gather(*(b.submit([it]) for it in items))
        await b.close()

    run(go())
    assert sum(len(c) for c in spy.calls) == 16
    assert all(len(c) <= 2 and len(c) * max(c) <= budget for c in spy.calls)


def test_a_full_queue_refuses_and_close_drains_what_was_admitted(tiny_scorer):
    items = prepared(tiny_scorer, 6)

    async def go():
        b = Batcher(tiny_scorer, ServeLimits(batch_window_ms=300, max_queue_rows=4, max_rows_per_request=4),
                    Metrics.create())
        await b.start()
        first = asyncio.ensure_future(b.submit(items[:3]))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match=r"the queue is full \(3 rows waiting, 2 more would exceed 4\)"):
            await b.submit(items[3:5])
        closing = asyncio.ensure_future(b.close())  # before the window ends: the admitted request is still scored
        done = await first
        await closing
        with pytest.raises(QueueFull, match="shutting down"):
            await b.submit(items[5:])
        return done

    assert len(run(go())) == 3


def test_a_request_that_breaks_the_forward_fails_alone(tiny_scorer):
    good = prepared(tiny_scorer, 4)
    vocab = len(tiny_scorer.tokenizer)
    broken = dataclasses.replace(good[0], encoded=dataclasses.replace(
        good[0].encoded, ids=tuple(vocab + 5 for _ in good[0].encoded.ids)))  # ids past the embedding table
    want = tiny_scorer.score_prepared(good)

    async def go():
        b = Batcher(tiny_scorer, ServeLimits(batch_window_ms=200, batch_tokens=10**6), Metrics.create())
        await b.start()
        results = await asyncio.gather(b.submit(good[:2]), b.submit([broken]), b.submit(good[2:]),
                                       return_exceptions=True)
        await b.close()
        return results

    a, bad, c = run(go())
    assert isinstance(bad, IndexError)
    for got, w in zip([*a, *c], want):
        assert max(abs(x - y) for x, y in zip(got.step_rewards, w.step_rewards)) < 1e-6


def test_limits_are_checked():
    with pytest.raises(ValueError, match="max_queue_rows must be a positive integer"):
        ServeLimits(max_queue_rows=0)
    with pytest.raises(ValueError, match="must not exceed max_queue_rows"):
        ServeLimits(max_rows_per_request=10, max_queue_rows=5)
    with pytest.raises(ValueError, match="batch_window_ms must be between 0 and 10000"):
        ServeLimits(batch_window_ms=-1)
    with pytest.raises(ValueError, match="batch_tokens must be a positive integer or None"):
        ServeLimits(batch_tokens=0)

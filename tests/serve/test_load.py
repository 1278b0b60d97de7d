"""Load on the real server: concurrent clients (every answer belongs to its request, nothing lost, batches formed),
a full queue (503 + Retry-After), and SIGTERM with requests in flight (they complete, the process exits 0)."""

import asyncio
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import edgeprm

from .conftest import AUTH, Server
from .rows import assert_scored_like, random_rows
from .test_app import metrics

CLIENTS, REQUESTS = 16, 50


def short_rows(n: int) -> list[dict]:
    """n short rows (1 to 3 steps of a few words), so that the load is on the server, not on the model."""
    rng = random.Random()
    out = []
    for _ in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        steps = [f"{a} + {b} = {a + b + rng.choice([0, 0, 1])}", f"so {a + b}", "done"][: rng.randint(1, 3)]
        out.append({"problem": f"What is {a} + {b}?", "steps": steps})
    return out


def test_concurrent_clients_get_their_own_rows_back_and_nothing_is_lost(tiny_server, tiny_scorer):
    pool = short_rows(64)
    expected = tiny_scorer.score_batch(pool)
    rng = random.Random()
    plans = [[rng.sample(range(len(pool)), rng.randint(1, 4)) for _ in range(REQUESTS)] for _ in range(CLIENTS)]
    with httpx.Client(base_url=tiny_server.url, headers=AUTH, timeout=120) as c:
        before = metrics(c)

    async def client(k: int) -> int:
        rows_seen = 0
        async with httpx.AsyncClient(base_url=tiny_server.url, headers=AUTH, timeout=120) as c:
            for j, picks in enumerate(plans[k]):
                sent = [{**pool[p], "id": f"c{k}-r{j}-{n}", "client": k} for n, p in enumerate(picks)]
                r = await c.post("/v1/score", json={"rows": sent})
                assert r.status_code == 200, r.text
                got = r.json()["rows"]
                assert [g["id"] for g in got] == [s["id"] for s in sent]  # this request's rows, in order
                for g, s, p in zip(got, sent, picks):
                    assert_scored_like(g, s, expected[p])
                rows_seen += len(got)
        return rows_seen

    async def everyone():
        return await asyncio.gather(*(client(k) for k in range(CLIENTS)))

    counts = asyncio.run(everyone())
    assert sum(counts) == sum(len(p) for plan in plans for p in plan)
    with httpx.Client(base_url=tiny_server.url, headers=AUTH, timeout=120) as c:
        after = metrics(c)
    key = ("edgeprm_rows_total", (("endpoint", "/v1/score"),))
    assert after[key] - before.get(key, 0) == sum(counts)
    batches = after[("edgeprm_batch_requests_count", ())] - before[("edgeprm_batch_requests_count", ())]
    requests = after[("edgeprm_batch_requests_sum", ())] - before[("edgeprm_batch_requests_sum", ())]
    assert requests == CLIENTS * REQUESTS
    assert batches < requests  # concurrent requests were merged into dynamic batches
    assert after[("edgeprm_queue_rows", ())] == 0


@pytest.fixture(scope="module")
def small_queue():
    """The bundled demo PRM behind a queue of 8 rows and a 300 ms batch window."""
    server = Server("--max-queue-rows", "8", "--max-rows", "8", "--batch-window-ms", "300", "--retry-after", "2")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def demo():
    return edgeprm.load(device="cpu")


def test_a_full_queue_answers_503_with_retry_after(small_queue, demo):
    rows = random_rows(8)
    want = demo.score_batch(rows)
    with httpx.Client(base_url=small_queue.url, timeout=120) as c:
        def send(_):
            return c.post("/v1/score", json={"rows": rows})

        with ThreadPoolExecutor(12) as ex:  # 12 requests of 8 rows into a queue of 8 rows
            answers = list(ex.map(send, range(12)))
        codes = [r.status_code for r in answers]
        assert set(codes) <= {200, 503} and codes.count(503) >= 1 and codes.count(200) >= 1, codes
        for r in answers:
            if r.status_code == 503:
                assert r.headers["Retry-After"] == "2" and "queue is full" in r.json()["detail"]
            else:
                for g, s, w in zip(r.json()["rows"], rows, want):
                    assert_scored_like(g, s, w)
        assert send(0).status_code == 200  # the queue drained: served again
        assert metrics(c)[("edgeprm_rejected_total", (("reason", "queue_full"),))] == codes.count(503)


def test_sigterm_finishes_the_requests_in_flight_then_exits(small_queue, demo):
    rows = random_rows(8)
    want = demo.score_batch(rows)
    answers = [None] * 4

    def send(i):
        with httpx.Client(base_url=small_queue.url, timeout=120) as c:
            answers[i] = c.post("/v1/score", json={"rows": rows[2 * i : 2 * i + 2]})

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    with httpx.Client(base_url=small_queue.url, timeout=30) as c:  # wait until all four are inside the server
        while metrics(c)[("edgeprm_requests_in_flight", ())] < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert small_queue.stop() == 0
    for t in threads:
        t.join(60)
    for i, r in enumerate(answers):
        assert r is not None and r.status_code == 200, r
        for g, s, w in zip(r.json()["rows"], rows[2 * i : 2 * i + 2], want[2 * i : 2 * i + 2]):
            assert_scored_like(g, s, w)
    with pytest.raises(httpx.TransportError):
        httpx.get(small_queue.url + "/health", timeout=5)

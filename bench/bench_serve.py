"""`edgeprm serve` under load: rows/s and p50/p99 request latency at 1, 4 and 16 concurrent clients, against the
same rows scored in-process, and the batch sizes the server formed (from its /metrics).

    python bench/bench_serve.py                          # the bundled demo PRM, 256 rows of synthetic arithmetic
    python bench/bench_serve.py --model DIR --rows 512 --rows-per-request 4 --clients 1 4 16

The server is a real `edgeprm serve` subprocess on 127.0.0.1 (a free port); clients are asyncio tasks on one
httpx.AsyncClient each, every client sending its share of the rows one request after another. In-process figures:
`score_batch` over all rows at once (the throughput ceiling: the scorer's own batching, no HTTP), and one row per
call (what a single client without batching gets). Prints the CPU with the figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    name = re.search(r"model name\s*:\s*(.+)", text)
    flags = set(re.search(r"flags\s*:\s*(.+)", text).group(1).split()) if "flags" in text else set()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return f"{name.group(1).strip() if name else 'unknown CPU'} ({', '.join(isa) or 'no AVX2'}), {os.cpu_count()} cores"


def start_server(model: str | None, extra: list[str]) -> tuple[subprocess.Popen, str]:
    args = [sys.executable, "-m", "edgeprm.cli", "serve", "--port", "0", "--log-level", "warning", *extra]
    if model:
        args += ["--model", model]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found = threading.Event()
    url = []

    def read():
        for line in proc.stdout:
            m = re.search(r"listening on (http://\S+)", line)
            if m and not url:
                url.append(m.group(1))
                found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(300):
        proc.kill()
        raise SystemExit("the server did not start")
    import httpx

    for _ in range(600):
        try:
            if httpx.get(url[0] + "/health", timeout=2).status_code == 200:
                return proc, url[0]
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server never answered /health")


def batch_stats(text: str) -> dict:
    """Histogram sums and counts, and bucket counts, of the batch metrics in Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith(("edgeprm_batch_rows", "edgeprm_batch_requests")):
                out[(s.name, s.labels.get("le"))] = s.value
    return out


def histogram(before: dict, after: dict, name: str) -> tuple[float, list[tuple[str, int]]]:
    """(mean, [(bucket upper bound, observations in that bucket)]) of one histogram between two scrapes."""
    count = after[(f"{name}_count", None)] - before.get((f"{name}_count", None), 0)
    total = after[(f"{name}_sum", None)] - before.get((f"{name}_sum", None), 0)
    edges = sorted((float(le), le) for (n, le) in after if n == f"{name}_bucket" and le != "+Inf")
    buckets, prev = [], 0.0
    for _, le in edges:
        cum = after[(f"{name}_bucket", le)] - before.get((f"{name}_bucket", le), 0)
        if cum - prev:
            buckets.append((le.removesuffix(".0"), int(cum - prev)))
        prev = cum
    return (total / count if count else float("nan")), buckets


async def load(url: str, headers: dict, rows: list[dict], clients: int, per_request: int) -> tuple[float, list]:
    """Every client sends its share of the rows, `per_request` rows a request; (wall seconds, latencies)."""
    import httpx

    requests = [rows[i : i + per_request] for i in range(0, len(rows), per_request)]
    shares = [requests[k::clients] for k in range(clients)]
    latencies: list[float] = []

    async def client(share):
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600) as c:
            for body in share:
                t0 = time.perf_counter()
                r = await c.post("/v1/score", json={"rows": body})
                latencies.append(time.perf_counter() - t0)
                r.raise_for_status()
                assert len(r.json()["rows"]) == len(body)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(s) for s in shares))
    return time.perf_counter() - t0, latencies


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint (default: the bundled demo PRM)")
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--rows-per-request", type=int, default=1)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--server-arg", action="append", default=[], help="extra `edgeprm serve` flag (repeatable)")
    args = p.parse_args(argv)

    import httpx

    import edgeprm
    from edgeprm.demo.synthetic import generate

    records = generate((args.rows + 3) // 4, candidates=4, seed=args.seed)[: args.rows]
    rows = [{"id": r["id"], "problem": r["problem"], "steps": r["steps"]} for r in records]
    scorer = edgeprm.load(args.model, device="cpu")
    scorer.score_batch(rows[:8])  # warm-up
    t0 = time.perf_counter()
    direct = scorer.score_batch(rows)
    batch_s = time.perf_counter() - t0
    single = []
    for row in rows[: min(64, len(rows))]:
        t0 = time.perf_counter()
        scorer.score_batch([row])
        single.append(time.perf_counter() - t0)
    tokens = sum(r.num_tokens for r in direct) / len(direct)
    del scorer

    proc, url = start_server(args.model, args.server_arg)
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            health = c.get("/health").json()
            asyncio.run(load(url, {}, rows[:16], 4, args.rows_per_request))  # warm-up
            table = []
            for n in args.clients:
                before = batch_stats(c.get("/metrics").text)
                wall, lat = asyncio.run(load(url, {}, rows, n, args.rows_per_request))
                after = batch_stats(c.get("/metrics").text)
                fwd_mean, fwd = histogram(before, after, "edgeprm_batch_rows")
                req_mean, _ = histogram(before, after, "edgeprm_batch_requests")
                table.append((n, len(rows) / wall, pct(lat, 50) * 1e3, pct(lat, 99) * 1e3, fwd_mean, req_mean, fwd))
    finally:
        proc.terminate()
        proc.wait(60)

    print(f"edgeprm serve benchmark: {health['model']} ({health['family']}, {health['backend']}), {len(rows)} rows "
          f"of synthetic arithmetic, {tokens:.0f} tokens/row, {args.rows_per_request} row(s)/request, batch window "
          f"{health['limits']['batch_window_ms']:g} ms, token budget {health['limits']['batch_tokens']}")
    print(f"CPU: {cpu_name()}; torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}")
    print()
    print(f"{'config':<34}{'rows/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'rows/forward':>14}{'requests/batch':>16}")
    print(f"{'in-process score_batch (all rows)':<34}{len(rows) / batch_s:>9.1f}{'':>9}{'':>9}")
    print(f"{'in-process, one row per call':<34}{1 / statistics.mean(single):>9.1f}{pct(single, 50) * 1e3:>9.1f}"
          f"{pct(single, 99) * 1e3:>9.1f}{1:>14}")
    for n, rate, p50, p99, fwd_mean, req_mean, _ in table:
        print(f"{f'server, {n} concurrent client(s)':<34}{rate:>9.1f}{p50:>9.1f}{p99:>9.1f}{fwd_mean:>14.1f}"
              f"{req_mean:>16.1f}")
    print()
    print("rows per forward batch formed by the server (bucket upper bound: batches):")
    for n, *_, fwd in table:
        print(f"  {n:>2} client(s): " + ", ".join(f"<={le}: {k}" for le, k in fwd))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

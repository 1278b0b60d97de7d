"""Rows/s of scoring a file single-process vs on Ray Data with 1 and 2 actors, and each actor's memory.

The same JSONL file (GSM8K Best-of-4 rows from ../shared/data when present, else the demo's synthetic problems) is
scored by the demo PRM (or `--model`) three ways, each through the code `edgeprm select` runs:
- `single Nt`: `edgeprm.select.pipeline.LocalScoring` in this process, torch on N threads (every core, then one);
- `ray xN`: `edgeprm.distributed.files.RayScoring` with N actors on a local Ray instance of `--cpus` CPUs, each
  actor reserving one CPU (PyTorch on one thread) and loading the scorer once.

Columns: wall seconds from the first call to the last row (Ray: actor start-up and model loading included, the Ray
instance's own start-up not); rows/s over that; rows/s after the first batch came back (steady state); peak RSS
(VmHWM) of this process for `single` and of each actor process for Ray (read from /proc while the job runs); the
CPU seconds each actor used (both actors busy = both did work); and the largest |delta| of any reward against the
single-process run. Ray's start-up and the CPU are printed above the table. Nothing here asserts a time.

    nice -n 10 python bench/bench_select.py                 # 512 rows
    python bench/bench_select.py --rows 2000 --actors 1,2,4 --cpus 4
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k_model_solutions.jsonl"


def cpu_name() -> str:
    """Model name and the vector flags that decide which kernels run."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return f"{name}, {os.cpu_count()} cores; " + " ".join(f for f in wanted if f in flags)


def status_kib(pid: int | str, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def map_workers() -> set[str]:
    """Pids of Ray Data's map-worker actors on this machine."""
    out = set()
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::MapWorker"):
                out.add(pid)
        except OSError:
            continue
    return out


def wait_for_actors_to_exit(timeout: float = 60.0) -> None:
    """An actor pool outlives its job for a moment; the next job should not share the CPUs with it."""
    deadline = time.time() + timeout
    while map_workers() and time.time() < deadline:
        time.sleep(0.2)


class ActorWatch:
    """Polls /proc for Ray's map-worker processes: peak RSS (VmHWM) and CPU seconds of each, while a job runs."""

    def __init__(self, every: float = 0.1):
        self.every, self.peak, self.cpu, self._stop = every, {}, {}, threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for pid in map_workers() - self.before:
                try:
                    self.peak[pid] = max(self.peak.get(pid, 0), status_kib(pid, "VmHWM"))
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    self.cpu[pid] = (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime
                except (OSError, IndexError, ValueError):
                    continue  # the process ended between listing and reading
            self._stop.wait(self.every)

    def __enter__(self):
        self.before = map_workers()  # an earlier job's actors, still exiting
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def write_input(path: Path, n: int) -> str:
    from edgeprm.rows import write_jsonl

    if GSM8K.is_file():
        from edgeprm.datasets import gsm8k_rows

        write_jsonl(itertools.islice(gsm8k_rows(GSM8K), n), path)
        return f"GSM8K Best-of-4 rows ({GSM8K.name})"
    from edgeprm.demo.synthetic import generate

    rows = [{"id": r["id"], "group": r["problem_id"], "problem": r["problem"], "steps": r["steps"]}
            for r in generate(math.ceil(n / 4), seed=7)][:n]
    write_jsonl(rows, path)
    return "synthetic demo problems (GSM8K data not found)"


def timed(scoring, path: Path) -> tuple[list[dict], float, float]:
    """All output rows, wall seconds, and seconds until the first batch came back."""
    t0 = time.perf_counter()
    rows, first = [], None
    for chunk in scoring.scored_chunks(path):
        first = time.perf_counter() - t0 if first is None else first
        rows += chunk
    return rows, time.perf_counter() - t0, first or 0.0


def max_delta(a: list[dict], b: list[dict]) -> float:
    assert [r.get("id") for r in a] == [r.get("id") for r in b], "rows differ in order or number"
    d = 0.0
    for x, y in zip(a, b):
        for u, v in zip([*x["step_rewards"], x["trajectory_reward"], x["score"]],
                        [*y["step_rewards"], y["trajectory_reward"], y["score"]]):
            if u is not None and v is not None:
                d = max(d, abs(u - v))
    return d


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--model", default=None, help="default: the bundled demo PRM")
    ap.add_argument("--actors", default="1,2", help="actor counts to run, comma-separated")
    ap.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray instance")
    ap.add_argument("--batch-rows", type=int, default=32, help="rows per actor call (and per single-process chunk)")
    args = ap.parse_args(argv)

    import torch

    import edgeprm
    from edgeprm.config import ScorerConfig
    from edgeprm.distributed.files import RayScoring
    from edgeprm.select.pipeline import LocalScoring

    tmp = Path(tempfile.mkdtemp(prefix="bench_select_"))
    src = tmp / "in.jsonl"
    what = write_input(src, args.rows)
    print(f"CPU: {cpu_name()}")
    print(f"input: {args.rows} {what}; model: {args.model or 'bundled demo PRM'}; load average at start "
          f"{os.getloadavg()[0]:.2f}")

    results = []
    t0 = time.perf_counter()
    scorer = edgeprm.load(args.model, device="cpu")
    load_s = time.perf_counter() - t0
    ref, wall, first = timed(LocalScoring(scorer, args.batch_rows), src)
    results.append((f"single {torch.get_num_threads()}t", wall, first, [status_kib("self", "VmHWM") / 1024], [], 0.0))
    # The same on one thread, as each Ray actor runs: on a busy shared machine a multi-threaded forward pass loses
    # far more to other processes than a single-threaded one, so this row separates threading from Ray.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows, wall, first = timed(LocalScoring(scorer, args.batch_rows), src)
    torch.set_num_threads(threads)
    results.append(("single 1t", wall, first, [status_kib("self", "VmHWM") / 1024], [], max_delta(rows, ref)))
    print(f"single-process model load {load_s:.1f} s (not in the table)")
    del scorer

    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    print(f"Ray {ray.__version__} local instance with {args.cpus} CPUs started in {time.perf_counter() - t0:.1f} s")
    try:
        for n in (int(x) for x in args.actors.split(",")):
            wait_for_actors_to_exit()
            scoring = RayScoring(args.model, ScorerConfig(device="cpu"), actors=n, batch_rows=args.batch_rows)
            with ActorWatch() as watch:
                rows, wall, first = timed(scoring, src)
            results.append((f"ray x{n}", wall, first, [v / 1024 for v in watch.peak.values()],
                            list(watch.cpu.values()), max_delta(rows, ref)))
    finally:
        ray.shutdown()

    print(f"load average at end {os.getloadavg()[0]:.2f} (the machine is shared: compare rows within one run)\n")
    head = (f"{'config':<10} {'rows':>5} {'wall s':>7} {'rows/s':>7} {'steady rows/s':>13} "
            f"{'peak RSS MiB (per actor)':>26} {'actor CPU s':>14} {'max |delta|':>11}")
    print(head)
    print("-" * len(head))
    for name, wall, first, rss, cpu, delta in results:
        steady = (args.rows - args.batch_rows) / (wall - first) if wall > first and args.rows > args.batch_rows else 0
        print(f"{name:<10} {args.rows:>5} {wall:>7.1f} {args.rows / wall:>7.1f} {steady:>13.1f} "
              f"{' / '.join(f'{r:.0f}' for r in rss):>26} {' / '.join(f'{c:.0f}' for c in cpu) or '-':>14} "
              f"{delta:>11.2g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

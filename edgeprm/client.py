"""A client for `edgeprm serve`, with the scorer's own `score` / `score_batch` / `best_of_n` API (torch-free).

    from edgeprm.client import Client
    prm = Client("http://127.0.0.1:8000", api_key=None)       # or EDGEPRM_API_KEY from the environment
    prm.score(problem, ["step 1", "step 2"]).step_rewards
    prm.score_batch(rows)                                       # rows or Trajectories -> list[ScoreResult]

Anything that takes a scorer for its `score_batch` (the TRL reward in `edgeprm.rl.trl`, `edgeprm.rl.dense`) takes a
Client. Large batches are sent in requests of at most the server's `max_rows_per_request` (read from `/health`); a
full server queue (503) is retried after its Retry-After, a bounded number of times. A bad row comes back as a
`ValueError` with the server's message (which names the row and the field), so local and remote scoring fail alike.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Sequence

from edgeprm.results import ScoreResult
from edgeprm.stats import best_index
from edgeprm.trajectory import DEFAULT_SPLIT, Trajectory

API_KEY_ENV = "EDGEPRM_API_KEY"
_RESULT_FIELDS = ("step_rewards", "trajectory_reward", "score", "truncated", "num_tokens")


class ServerError(RuntimeError):
    """The server answered with an error that is not the caller's input (5xx, or a full queue after every retry)."""


def row_of(item, split: str = DEFAULT_SPLIT) -> dict:
    """The wire row of a Trajectory or a row dict ({"problem", "steps"|"solution", "response"?, "id"?})."""
    if isinstance(item, Trajectory):
        row = {"problem": item.problem, "steps": list(item.steps)}
        if item.response is not None:
            row["response"] = item.response
        if item.id is not None:
            row["id"] = item.id
        return row
    if not isinstance(item, dict):
        raise ValueError(f"a row must be a dict or a Trajectory; got {type(item).__name__}")
    return item


def _detail(response) -> str:
    """The server's error text: FastAPI's {"detail": str | [{"loc", "msg"}, ...]}."""
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text[:500]
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', ()))}: {d.get('msg')}" for d in detail[:5])
    return str(detail)


class Client:
    """Scores through an `edgeprm serve` server over HTTP (one connection pool, thread-safe).

    url: the server's base URL. api_key: its bearer token (default: the EDGEPRM_API_KEY environment variable).
    timeout: seconds per request. retries: how many times a 503 (queue full) or a dropped connection is retried.
    """

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 300.0, retries: int = 5):
        import httpx

        self.url = url.rstrip("/")
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.retries = retries
        # TCP_NODELAY: without it each request on a new connection waited ~50 ms for a delayed ACK (measured on
        # loopback against uvicorn; 1 ms with it)
        transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)
        self._max_rows: int | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------------------------------
    def _post(self, path: str, body: dict) -> dict:
        import httpx

        for attempt in range(self.retries + 1):
            try:
                r = self._http.post(path, json=body)
            except (httpx.ConnectError, httpx.RemoteProtocolError) as e:
                if attempt == self.retries:
                    raise ServerError(f"{self.url}{path}: {e}") from e
                time.sleep(min(2.0**attempt * 0.1, 5.0))
                continue
            if r.status_code == 503 and attempt < self.retries:
                time.sleep(float(r.headers.get("Retry-After", 1)))
                continue
            if r.status_code in (400, 413, 422):
                raise ValueError(f"{self.url}{path} rejected the request ({r.status_code}): {_detail(r)}")
            if r.status_code in (401, 403):
                raise PermissionError(f"{self.url}{path}: {_detail(r)} (pass api_key= or set {API_KEY_ENV})")
            if r.status_code != 200:
                raise ServerError(f"{self.url}{path} answered {r.status_code}: {_detail(r)}")
            return r.json()
        raise AssertionError("unreachable")

    def health(self) -> dict:
        """The server's /health: status, model, family, length limit and request limits."""
        r = self._http.get("/health")
        r.raise_for_status()
        return r.json()

    @property
    def max_rows_per_request(self) -> int:
        if self._max_rows is None:
            self._max_rows = int(self.health()["limits"]["max_rows_per_request"])
        return self._max_rows

    # -- the scorer's API --------------------------------------------------------------------------------------------
    def score(self, problem: str, steps, response: str | None = None) -> ScoreResult:
        """Rewards of one trajectory (`steps` a list of strings, or a solution string split by the server)."""
        row = {"problem": problem, **({"solution": steps} if isinstance(steps, str) else {"steps": list(steps)})}
        if response is not None:
            row["response"] = response
        return self.score_batch([row])[0]

    def score_batch(self, items: Iterable, progress: bool = False) -> list[ScoreResult]:
        """Score Trajectories or row dicts, in input order, in requests of at most `max_rows_per_request` rows."""
        rows = [row_of(it) for it in items]
        out: list[ScoreResult] = []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(rows), unit="traj", desc="scoring (remote)")
        step = self.max_rows_per_request if rows else 1
        for i in range(0, len(rows), step):
            chunk = rows[i : i + step]
            scored = self._post("/v1/score", {"rows": chunk})["rows"]
            if len(scored) != len(chunk):
                raise ServerError(f"sent {len(chunk)} rows, got {len(scored)} back")
            for sent, got in zip(chunk, scored):
                rid = sent.get("id")
                out.append(ScoreResult(**{k: got[k] for k in _RESULT_FIELDS}, id=None if rid is None else str(rid)))
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        return out

    def best_of_n(self, problem: str, candidates: Sequence) -> tuple[int, list[ScoreResult]]:
        """Index of the candidate with the highest score (first on ties) and every candidate's result."""
        if not candidates:
            raise ValueError("best_of_n needs at least one candidate; got 0")
        rows = [row_of(c) if isinstance(c, Trajectory) else
                {"id": str(i), "problem": problem, **({"solution": c} if isinstance(c, str) else {"steps": list(c)})}
                for i, c in enumerate(candidates)]
        results = self.score_batch(rows)
        return best_index([r.score for r in results]), results

    def get_reward(self, query: Sequence[str], prompts: Sequence[str] | None = None,
                   labels: Sequence | None = None) -> list[float]:
        """OpenRLHF's remote reward-model call: one reward per query (prompt + response text)."""
        body = {"query": list(query)}
        if prompts is not None:
            body["prompts"] = list(prompts)
        if labels is not None:
            body["labels"] = list(labels)
        return self._post("/get_reward", body)["rewards"]

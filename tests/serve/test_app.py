"""The real server (a subprocess on 127.0.0.1) against direct scoring, and every kind of bad request it must refuse."""

import json
import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..helpers import BLOCK_TORCH
from .conftest import API_KEY, AUTH, Server
from .rows import assert_scored_like, random_rows

CHATML = "<|im_start|>system\nYou are a careful solver.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n" \
         "<|im_start|>assistant\n"


def test_score_matches_direct_scoring_in_one_request_or_many(client, tiny_scorer):
    rows = random_rows(40)
    want = tiny_scorer.score_batch(rows)
    r = client.post("/v1/score", json={"rows": rows})
    assert r.status_code == 200, r.text
    got = r.json()["rows"]
    assert len(got) == len(rows)
    for g, s, w in zip(got, rows, want):
        assert_scored_like(g, s, w)
    cut = sorted(random.sample(range(1, len(rows)), 4))
    parts = [rows[a:b] for a, b in zip([0, *cut], [*cut, len(rows)])]
    with ThreadPoolExecutor(len(parts)) as pool:  # concurrent: they may share dynamic batches
        answers = list(pool.map(lambda p: client.post("/v1/score", json={"rows": p}), parts))
    again = [row for a in answers for row in a.json()["rows"]]
    for g, s, w in zip(again, rows, want):
        assert_scored_like(g, s, w)


def test_get_reward_matches_direct_scoring(client, tiny_scorer):
    rows = [r for r in random_rows(12) if "steps" in r]
    prompts = [CHATML.format(r["problem"]) for r in rows]
    queries = [p + "\n\n".join(r["steps"]) + "<|im_end|>" for p, r in zip(prompts, rows)]
    want = [tiny_scorer.score(r["problem"], r["steps"]).score for r in rows]
    for body in ({"query": queries, "prompts": prompts, "labels": [None] * len(rows)}, {"query": queries}):
        r = client.post("/get_reward", json=body)
        assert r.status_code == 200, r.text
        got = r.json()["rewards"]
        assert len(got) == len(want) and max(abs(a - b) for a, b in zip(got, want)) <= 1e-6
    empty = client.post("/get_reward", json={"query": [queries[0], prompts[1] + "<|im_end|>"]}).json()["rewards"]
    assert abs(empty[0] - want[0]) <= 1e-6 and empty[1] == 0.0  # no text after the prompt: --empty-reward


def _detail(r) -> list:
    return r.json()["detail"]


BAD = [  # (what, body or raw bytes, headers, status, where the error points, text in the message)
    ("malformed JSON", b'{"rows": [{"problem": "x", "steps": ["a"]}', {}, 422, ["body", 42], "JSON decode"),
    ("rows not a list", {"rows": {"problem": "x"}}, {}, 422, ["body", "rows"], "list"),
    ("no rows", {"rows": []}, {}, 422, ["body", "rows"], "at least 1"),
    ("steps a string", {"rows": [{"problem": "x", "steps": "a"}]}, {}, 422, ["body", "rows", 0, "steps"], "list"),
    ("problem a number", {"rows": [{"problem": 3, "steps": ["a"]}]}, {}, 422, ["body", "rows", 0, "problem"], "str"),
    ("empty steps", {"rows": [{"problem": "x", "steps": []}]}, {}, 422, ["body", "rows", 0, "steps"], "at least 1"),
    ("blank step", {"rows": [{"problem": "x", "steps": ["a", "  "]}]}, {}, 422, ["body", "rows", 0, "steps", 1],
     "non-empty"),
    ("null steps", {"rows": [{"problem": "x", "steps": None}]}, {}, 422, ["body", "rows", 0, "steps"], "list"),
    ("neither steps nor solution", {"rows": [{"problem": "x"}]}, {}, 422, ["body", "rows", 0], "'steps'"),
    ("id a bool", {"rows": [{"id": True, "problem": "x", "steps": ["a"]}]}, {}, 422, ["body", "rows", 0, "id"], ""),
    ("too many rows", {"rows": [{"problem": "x", "steps": ["a"]}] * 65}, {}, 422, ["body", "rows"], "at most 64"),
    ("over-long row", {"rows": [{"problem": "x", "steps": ["a"]}, {"id": "long", "problem": "x",
                                                                   "steps": ["7 + 8 = 15. " * 60] * 4}]},
     {}, 422, ["body", "rows", 1], "over the model's limit of 1024 tokens"),
    ("huge body", {"rows": [{"problem": "x", "steps": ["y" * 250_000]}]}, {}, 413, None, "over the server's limit"),
    ("not JSON", b"problem=x", {"Content-Type": "application/x-www-form-urlencoded"}, 415, None, "must be JSON"),
]


@pytest.mark.parametrize("what,body,headers,status,loc,text", BAD, ids=[b[0] for b in BAD])
def test_bad_request_gets_its_4xx_and_the_server_keeps_serving(client, tiny_scorer, what, body, headers, status, loc,
                                                                 text):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post("/v1/score", content=content, headers={"Content-Type": "application/json", **headers})
    assert r.status_code == status, r.text
    if loc is None:
        assert text in r.json()["detail"]
    else:
        items = _detail(r)
        assert any(item["loc"][: len(loc)] == loc and text in item["msg"] for item in items), items
    good = {"problem": "What is 2 + 2?", "steps": ["2 + 2 = 4", "The answer is 4."]}
    ok = client.post("/v1/score", json={"rows": [good]})
    assert ok.status_code == 200
    assert_scored_like(ok.json()["rows"][0], good, tiny_scorer.score_batch([good])[0])


def test_get_reward_refuses_queries_it_cannot_read(client):
    q = CHATML.format("What is 1 + 1?") + "1 + 1 = 2"
    cases = [({"query": [q], "prompts": ["a", "b"]}, ["body"], "one per query"),
             ({"query": [q, "no chat markers at all"]}, ["body", "query", 1], "response marker"),
             ({"query": [q], "prompts": ["another prompt"]}, ["body", "query", 0], "does not start with its prompt"),
             ({"query": "not a list"}, ["body", "query"], "list")]
    for body, loc, text in cases:
        r = client.post("/get_reward", json=body)
        assert r.status_code == 422, (body, r.text)
        assert any(i["loc"][: len(loc)] == loc and text in i["msg"] for i in _detail(r)), _detail(r)


def test_bad_requests_never_reach_the_good_ones_batched_beside_them(client, tiny_scorer):
    rows = random_rows(16)
    want = tiny_scorer.score_batch(rows)
    bad = [{"rows": [row, {"problem": "x", "steps": [""]}]} for row in rows[:8]]  # each has one bad row
    good = [{"rows": [row]} for row in rows]
    bodies = [b for pair in zip(good, [*bad, *[None] * 8]) for b in pair if b is not None]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda b: client.post("/v1/score", json=b), bodies))
    scored = iter(zip(rows, want))
    for body, r in zip(bodies, answers):
        if len(body["rows"]) == 2:
            assert r.status_code == 422 and _detail(r)[0]["loc"][:3] == ["body", "rows", 1]
        else:
            row, w = next(scored)
            assert r.status_code == 200
            assert_scored_like(r.json()["rows"][0], row, w)


def test_api_key_is_required_everywhere_but_health(tiny_server):
    url = tiny_server.url
    body = {"rows": [{"problem": "x", "steps": ["a"]}]}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        for method, path in (("POST", "/v1/score"), ("POST", "/get_reward"), ("GET", "/metrics"),
                             ("GET", "/openapi.json"), ("GET", "/docs")):
            r = httpx.request(method, url + path, json=body if method == "POST" else None, headers=headers)
            assert r.status_code == 401, (path, headers)
            assert r.headers["WWW-Authenticate"] == "Bearer"
        assert httpx.get(url + "/health", headers=headers).status_code == 200
    assert httpx.post(url + "/v1/score", json=body, headers=AUTH).status_code == 200
    assert httpx.get(url + "/metrics", headers=AUTH).status_code == 200


def metrics(client) -> dict:
    """{(sample name, labels as a sorted tuple): value} of the server's /metrics."""
    text = client.get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_what_was_served(client):
    before = metrics(client)
    rows = random_rows(9)
    assert client.post("/v1/score", json={"rows": rows}).status_code == 200
    assert client.post("/v1/score", json={"rows": [{"problem": "x"}]}).status_code == 422
    after = metrics(client)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("edgeprm_rows_total", endpoint="/v1/score") == 9
    assert delta("edgeprm_requests_total", endpoint="/v1/score", status="200") == 1
    assert delta("edgeprm_requests_total", endpoint="/v1/score", status="422") == 1
    assert delta("edgeprm_rejected_total", reason="invalid_body") == 1
    assert delta("edgeprm_batch_rows_sum") == 9 and delta("edgeprm_batch_rows_count") >= 1
    assert delta("edgeprm_tokens_total") > 9 * 5
    assert delta("edgeprm_request_seconds_count", endpoint="/v1/score") == 2
    assert after[("edgeprm_queue_rows", ())] == 0
    assert after[("edgeprm_requests_in_flight", ())] == 1  # this /metrics request itself


def test_openapi_schema_says_what_the_server_takes(client):
    spec = client.get("/openapi.json").json()
    score = spec["paths"]["/v1/score"]["post"]
    assert {"200", "401", "413", "415", "422", "503"} <= set(score["responses"])
    request = spec["components"]["schemas"]["ScoreRequest"]["properties"]["rows"]
    assert (request["minItems"], request["maxItems"]) == (1, 64)
    row = spec["components"]["schemas"]["Row"]
    assert row["properties"]["problem"]["pattern"] == r"\S" and row["additionalProperties"] is True
    assert row["anyOf"] == [{"required": ["steps"]}, {"required": ["solution"]}]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    health = client.get("/health").json()
    assert health["limits"]["max_rows_per_request"] == 64 and health["max_length"] == 1024


def test_the_onnx_backend_serves_without_torch(bundle):
    """`edgeprm serve --backend onnx` in a process where importing torch or transformers fails."""
    import edgeprm

    path = bundle("step-classifier")
    direct = edgeprm.load(path, backend="onnx")
    server = Server("--backend", "onnx", "--model", str(path), prelude=BLOCK_TORCH)
    try:
        rows = random_rows(6)
        r = httpx.post(f"{server.url}/v1/score", json={"rows": rows}, timeout=60)
        assert r.status_code == 200, r.text
        assert httpx.get(f"{server.url}/health").json()["backend"] == "onnx"
        for g, s, w in zip(r.json()["rows"], rows, direct.score_batch(rows)):
            assert_scored_like(g, s, w)
    finally:
        assert server.stop() == 0

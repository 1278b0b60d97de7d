"""`edgeprm serve --model M`: a batching HTTP scoring service (see `edgeprm.serve`).

Binds 127.0.0.1:8000 by default. `--api-key` (or the EDGEPRM_API_KEY environment variable) requires
`Authorization: Bearer <key>` on every endpoint except /health. `--port 0` picks a free port; the line
`edgeprm serve: listening on http://HOST:PORT` on standard error says which. SIGTERM or Ctrl-C finishes the requests
in flight, then exits 0.
"""

from __future__ import annotations

import os

from edgeprm.cli.options import add_scorer_options, scorer_config
from edgeprm.client import API_KEY_ENV
from edgeprm.rl.template import CHATML_ASSISTANT, CHATML_USER, END_TOKENS
from edgeprm.serve.limits import ServeLimits

_D = ServeLimits()


def add_arguments(p) -> None:
    p.description = ("Serve one PRM over HTTP: POST /v1/score (rows), POST /get_reward (OpenRLHF's remote reward "
                     "model), GET /health, GET /metrics (Prometheus). Requests arriving together are scored in one "
                     "forward.")
    add_scorer_options(p)
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    g.add_argument("--port", type=int, default=8000, help="port (0: any free port, printed on start)")
    g.add_argument("--api-key", default=None, help=f"require this bearer token (default: ${API_KEY_ENV} if set)")
    g.add_argument("--graceful-timeout", type=float, default=30.0,
                   help="seconds SIGTERM waits for requests in flight before cancelling them")
    g.add_argument("--max-connections", type=int, default=1024, help="concurrent connections (503 above)")
    g.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    g.add_argument("--access-log", action="store_true", help="log every request")
    lim = p.add_argument_group("limits and batching")
    lim.add_argument("--max-body-bytes", type=int, default=_D.max_body_bytes, help="largest request body (413)")
    lim.add_argument("--max-rows", type=int, default=_D.max_rows_per_request, help="rows or queries per request")
    lim.add_argument("--max-queue-rows", type=int, default=_D.max_queue_rows,
                     help="rows waiting to be batched, all requests together (503 + Retry-After above)")
    lim.add_argument("--batch-window-ms", type=float, default=_D.batch_window_ms,
                     help="how long a request may wait for others to join its batch")
    lim.add_argument("--batch-tokens", type=int, default=None,
                     help="padded tokens per dynamic batch (default: --token-budget)")
    lim.add_argument("--retry-after", type=int, default=_D.retry_after_s, help="Retry-After seconds of a 503")
    t = p.add_argument_group("/get_reward: how a query (prompt + response) becomes problem and steps")
    t.add_argument("--problem-pattern", default=CHATML_USER,
                   help="regex whose group 1 (last match) in the prompt is the problem; a prompt it does not match "
                        "is the problem itself (default: the last ChatML user turn)")
    t.add_argument("--response-marker", default=CHATML_ASSISTANT,
                   help="regex ending the prompt in a query sent without prompts (default: ChatML assistant header)")
    t.add_argument("--strip-token", action="append", default=None,
                   help=f"token dropped from the end of a response (repeatable; default: {' '.join(END_TOKENS)})")
    t.add_argument("--think", action="store_true",
                   help="responses are <think>steps</think>answer: score the thinking steps, the answer as response")
    t.add_argument("--empty-reward", type=float, default=_D.empty_reward,
                   help="reward of a response with no text (no steps to score)")


def run(args) -> int:
    import edgeprm
    from edgeprm.rl.template import QueryTemplate
    from edgeprm.serve.server import bind
    from edgeprm.serve.server import run as serve

    limits = ServeLimits(max_body_bytes=args.max_body_bytes, max_rows_per_request=args.max_rows,
                         max_queue_rows=args.max_queue_rows, batch_window_ms=args.batch_window_ms,
                         batch_tokens=args.batch_tokens, retry_after_s=args.retry_after,
                         empty_reward=args.empty_reward)
    template = QueryTemplate(problem_pattern=args.problem_pattern or None, response_marker=args.response_marker or None,
                             strip_tokens=tuple(args.strip_token) if args.strip_token else END_TOKENS,
                             split=args.separator, think=args.think)
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    sock = bind(args.host, args.port)  # before loading: a taken port fails at once
    from edgeprm.serve.app import create_app

    scorer = edgeprm.load(args.model, config=scorer_config(args))
    name = args.model if args.model is not None else "edgeprm demo PRM"
    app = create_app(scorer, limits, api_key=api_key, template=template, model_name=os.path.basename(str(name)))
    serve(app, sock, graceful_timeout_s=args.graceful_timeout, log_level=args.log_level,
          access_log=args.access_log, max_connections=args.max_connections)
    return 0

"""Running the app with uvicorn: the listening socket, graceful shutdown, and the exit status.

The socket is bound before the model loads, so a port already in use fails in a second, and `--port 0` picks a free
port and prints it (tests and scripts read the `listening on` line). uvicorn owns SIGTERM/SIGINT while it serves: it
stops accepting, lets every request in flight finish (up to `graceful_timeout_s`), then runs the app's lifespan
shutdown, which drains the batcher. It then re-raises the signal it caught; the handler installed here turns that
into a normal exit (status 0), since the shutdown it asked for is done.
"""

from __future__ import annotations

import signal
import socket
import sys


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on host:port (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it every
    # response waits ~40 ms (Nagle against the client's delayed ACK: /health took 48 ms instead of 1 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --port or --host") from None
    sock.set_inheritable(True)
    return sock


def _stopped(signum, frame):
    raise SystemExit(0)


def run(app, sock: socket.socket, graceful_timeout_s: float = 30.0, log_level: str = "info",
        access_log: bool = False, max_connections: int = 1024) -> None:
    """Serve `app` on `sock` until SIGTERM/SIGINT; returns (or exits 0) after the graceful shutdown."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=access_log, lifespan="on",
                            timeout_graceful_shutdown=graceful_timeout_s, limit_concurrency=max_connections)
    server = uvicorn.Server(config)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"edgeprm serve: listening on http://{shown}:{port}", file=sys.stderr, flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stopped)
    server.run(sockets=[sock])

"""Real `edgeprm serve` processes for the tests: started on 127.0.0.1 with `--port 0` (a free port, read back from the
`listening on` line), stopped with SIGTERM at the end of the module or session that uses them."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-key-3f9c"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


class Server:
    """One `python -m edgeprm.cli serve ...` subprocess; `url` once it answers /health."""

    def __init__(self, *args: str, startup_s: float = 120.0, prelude: str | None = None):
        # One torch thread: the server shares the two cores with the test's clients, and an OpenMP team of two
        # spin-waits for a thread that is not scheduled (a tiny forward took ~48 ms instead of ~1.5 ms that way).
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
        env.pop("EDGEPRM_API_KEY", None)
        argv = ["serve", "--port", "0", "--log-level", "warning", *args]
        script = f"{prelude}\nimport sys\nfrom edgeprm.cli import main\nsys.exit(main({argv!r}))"
        command = [sys.executable, "-m", "edgeprm.cli", *argv] if prelude is None else [sys.executable, "-c", script]
        self.proc = subprocess.Popen(command,
                                     cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._port = threading.Event()
        self.url = None
        threading.Thread(target=self._read, daemon=True).start()
        if not self._port.wait(startup_s):
            self.stop()
            raise RuntimeError("the server printed no 'listening on' line:\n" + "".join(self.lines[-30:]))
        deadline = time.monotonic() + startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the server exited during start-up:\n" + "".join(self.lines[-30:]))
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("the server never answered /health:\n" + "".join(self.lines[-30:]))

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"listening on (http://\S+)", line)
            if m and self.url is None:
                self.url = m.group(1)
                self._port.set()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


TINY_ARGS = ("--max-length", "1024", "--max-rows", "64", "--max-body-bytes", "200000", "--api-key", API_KEY)


@pytest.fixture(scope="session")
def tiny_path(checkpoints):
    return checkpoints["step-classifier"]


@pytest.fixture(scope="session")
def tiny_server(tiny_path):
    """A server of the tiny step-classifier checkpoint with small limits and an API key."""
    server = Server("--model", str(tiny_path), *TINY_ARGS)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_scorer(tiny_path):
    """The same model, loaded in the test process, for direct scoring."""
    import edgeprm

    return edgeprm.load(tiny_path, device="cpu", max_length=1024)


@pytest.fixture
def client(tiny_server):
    with httpx.Client(base_url=tiny_server.url, headers=AUTH, timeout=60) as c:
        yield c

"""Fixtures that start the real server (`python -m faas serve`) on a free loopback port."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

ROLE = "arn:aws:iam::000000000000:role/lambda-role"
REPO = Path(__file__).resolve().parents[1]

# Settings that make the server's timers test-sized; defaults stay Lambda's.
TEST_ENV = {
    "FAAS_RUNTIME__REAP_INTERVAL": "0.5",
    "FAAS_SERVER__SHUTDOWN_TIMEOUT": "5",
}


class Server:
    """A `faas serve` subprocess. `start()` waits for its "listening" line; `stop()` sends SIGTERM."""

    def __init__(self, data_dir: Path, *, env: dict[str, str] | None = None, config: Path | None = None):
        self.data_dir = data_dir
        self.env = {**os.environ, **TEST_ENV, **(env or {})}
        self.config = config
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: list[str] = []
        self.port = 0

    def start(self, timeout: float = 30.0) -> Server:
        cmd = [sys.executable, "-m", "faas", "serve", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if self.config:
            cmd += ["--config", str(self.config)]
        self.output = []
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=self.env,
        )
        ready = threading.Event()

        def pump(proc: subprocess.Popen[str]) -> None:
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    self.output.append(line)
                    if line.startswith("faas listening on "):
                        self.url = line.split()[3]
                        ready.set()
            except (ValueError, OSError):  # stdout closed by stop()
                pass

        threading.Thread(target=pump, args=(self.proc,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start:\n" + "".join(self.output))
        # Restarts keep the same port, so clients made before a restart still work.
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        if self.proc.stdout:
            self.proc.stdout.close()
        return code

    def client(self, service: str = "lambda", **config: object):
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(
                parameter_validation=False, retries={"max_attempts": 1, "mode": "standard"},
                read_timeout=120, **config,
            ),
        )


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = Server(tmp_path_factory.mktemp("faas-data")).start()
    yield srv
    srv.stop()


@pytest.fixture
def own_server(tmp_path):
    """Start servers of the test's own (with FAAS_* settings as keyword arguments); stopped at teardown."""
    servers: list[Server] = []

    def start(**env) -> Server:
        srv = Server(tmp_path / f"data{len(servers)}", env={k: str(v) for k, v in env.items()}).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture(scope="session")
def lam(server: Server):
    return server.client()


def make_zip(files: dict[str, str | bytes], modes: dict[str, int] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = ((modes or {}).get(name, 0o644) | 0o100000) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, content)
    return buf.getvalue()


def json_lines(path: Path) -> list[dict]:
    """The records a function appended to a JSON-lines file so far ([] before the first)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def unique(prefix: str = "fn") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_function(lam, code: str | dict[str, str | bytes], *, name: str | None = None,
                    handler: str = "app.handler", runtime: str = "python3.11", **kwargs):
    files = {"app.py": code} if isinstance(code, str) else code
    name = name or unique()
    resp = lam.create_function(
        FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler, Code={"ZipFile": make_zip(files)}, **kwargs
    )
    return name, resp


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(interval)


def front_counts(url: str) -> tuple[float, float]:
    """The invoke front's counters in /metrics: (requests it answered, connections it handed to aiohttp)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    found = dict(re.findall(r"^faas_invoke_front_(requests|handovers)_total ([0-9.e+]+)$", text, re.M))
    return float(found["requests"]), float(found["handovers"])
